"""DeepCTR-Torch 0.3.0 DIN on adrank's exported sequence split (inside ``benchmarks/.peers-venv``).

    benchmarks/.peers-venv/bin/python benchmarks/peers/din_run.py SPEC.json

Driven by ``python -m benchmarks.sequence_peer``, which exports the splits
(``benchmarks/sequence_peer.py`` documents the ``.npz`` layout) and writes the spec from
adrank's ``configs/models/movielens_100k/din.yaml``. The spec's ``data`` is
``{"train": npz, "valid": npz, "test": npz}``; the rest is :mod:`common`'s spec.

Model: ``DIN(dnn_feature_columns, history_feature_list)`` with one ``SparseFeat`` per
categorical field and one ``VarLenSparseFeat`` per history field (``hist_item_id`` sharing
``item_id``'s table, ``hist_genre`` sharing ``genre``'s, both masked by the length column
``hist_len``); ``history_feature_list = [item_id, genre]``, so target and behaviours are the
concatenated (item, genre) vectors, as in adrank. Same as adrank's DIN: embedding dim 10,
activation unit ``[q, k, q - k, q * k]`` -> 36 Dice -> 1 with unnormalised weights
(``att_weight_normalization=False``), DNN over [8 field vectors, interest] = 100 -> 200 ->
80 -> 1 with BatchNorm, ReLU, dropout 0.1; batch 4096, Adam lr 1e-3, embedding
regularizer 0.01 on the whole tables, no net regularizer, gradient-norm clipping; the BARS
converge protocol (``common.fit_epochs``: validation AUC after every epoch, LR x 0.1 on a
non-improving one, floor 1e-6, stop after ``patience`` = 2 of them, at most 100 epochs,
best epoch's weights restored); test AUC, logloss and gAUC by user (``common.gauc``, adrank's
definition) from the restored weights in eval mode.

Differences from adrank's DIN (also emitted as ``differences`` with the result):

* **Dice**: DeepCTR's ``Dice`` is a ``BatchNorm1d`` (affine, momentum 0.1, eps 1e-8) over
  all L = 50 positions of the batch, padding included; adrank's Dice takes the batch
  statistics over real behaviours only (no affine, momentum 0.01). The affine's 2 x 36
  weights are the only parameters adrank's DIN lacks (75,422 against 75,350 here).
* **History layout**: DeepCTR masks positions ``>= hist_len``, so it needs the real
  behaviours first; adrank's rows pad on the left (newest last). Each row is re-aligned
  (the same behaviours in the same order, padding moved to the end) before training.
* **Loss scale**: DeepCTR's loss is the batch **sum** of BCE plus ``l2 * ||W||^2``; adrank's
  is the batch mean plus ``emb_reg / 2 * ||W||^2``. ``l2 = emb_reg / 2 * batch_size`` and a
  clip norm of ``grad_clip_norm * batch_size`` give the same Adam steps, except on the last
  (smaller) batch of an epoch, where the regularizer weighs relatively more.
* **Initialization**: ``common.bars_init`` (Xavier-normal Linear weights, zero biases,
  normal(0, 1e-4) embeddings) as adrank; DeepCTR's Dice BatchNorm keeps gamma 1, beta 0.
* **Training loop**: DeepCTR's own ``fit`` (one ``fit(epochs=1)`` per epoch, its shuffling
  DataLoader), so batch order differs from adrank's loader even at the same seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from common import (
    auc_logloss,
    bars_init,
    emit,
    fit_deepctr,
    gauc,
    load_data,
    load_spec,
    setup,
)

DIFFERENCES = [
    "Dice: DeepCTR's Dice is a BatchNorm1d (affine, momentum 0.1) over all 50 positions, "
    "padding included; adrank's takes the statistics over real behaviours only (no affine, "
    "momentum 0.01). The affine's 2 x 36 weights are the only parameters adrank's DIN lacks",
    "history layout: DeepCTR masks positions >= length, so each left-padded row is re-aligned "
    "(same behaviours, same order, padding at the end)",
    "loss: DeepCTR's batch-sum BCE + l2 * ||W||^2 with l2 = emb_reg / 2 * batch_size and clip "
    "norm grad_clip_norm * batch_size (adrank: batch mean + emb_reg / 2 * ||W||^2): the same "
    "Adam steps except on each epoch's last, smaller batch",
    "initialization: common.bars_init (Xavier-normal Linear, normal(0, 1e-4) embeddings) as "
    "adrank; Dice's BatchNorm affine starts at gamma 1, beta 0",
    "training loop: DeepCTR's own fit (its shuffling DataLoader), so batch order differs from "
    "adrank's even at the same seed",
]


def right_aligned(ids: np.ndarray, lengths: np.ndarray, main: np.ndarray) -> np.ndarray:
    """(N, L) histories with the ``lengths`` real behaviours moved to the first positions
    (order kept) and zeros after them, from rows padded on either side; the real positions
    are those of ``main`` (N, L), the history ``ids`` is aligned with (or ``ids`` itself)."""
    width = ids.shape[1]
    start = np.argmax(main != 0, axis=1)  # first real position (0 for an empty history)
    index = (np.arange(width)[None, :] + start[:, None]) % width
    out = np.take_along_axis(ids, index, axis=1)
    out[np.arange(width)[None, :] >= lengths[:, None]] = 0
    return out


def inputs(data: dict[str, Any], fields: list[str], sequences: list[str]) -> dict[str, Any]:
    """DeepCTR's input dict: one (N,) array per field, (N, L) per history, (N,) ``hist_len``."""
    x = {f: data["x"][:, i] for i, f in enumerate(fields)}
    main = data[f"seq_{sequences[0]}"]
    for name in sequences:
        x[name] = right_aligned(data[f"seq_{name}"], data["hist_len"], main)
    x["hist_len"] = data["hist_len"]
    return x


def main() -> None:
    spec = load_spec()
    import deepctr_torch
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat
    from deepctr_torch.models import DIN

    splits = {k: load_data(v) for k, v in spec["data"].items()}
    meta = splits["train"]
    fields = [str(f) for f in meta["fields"]]
    sequences = [str(s) for s in meta["sequences"]]
    tables = [str(t) for t in meta["sequence_tables"]]
    max_len = int(meta["max_len"])
    if any(s != f"hist_{t}" for s, t in zip(sequences, tables, strict=True)):
        raise SystemExit(f"DeepCTR's DIN names histories hist_<target>: got {sequences}")
    p = spec["params"]
    d = int(p.get("embedding_dim", 10))
    columns: list[Any] = [
        SparseFeat(f, vocabulary_size=int(v), embedding_dim=d)
        for f, v in zip(fields, meta["vocab_sizes"], strict=True)
    ]
    columns += [
        VarLenSparseFeat(
            SparseFeat(s, vocabulary_size=int(v), embedding_dim=d, embedding_name=t),
            maxlen=max_len,
            length_name="hist_len",
        )
        for s, t, v in zip(sequences, tables, meta["sequence_vocab_sizes"], strict=True)
    ]
    x, xv, xt = (inputs(splits[k], fields, sequences) for k in ("train", "valid", "test"))
    y = splits["train"]["y"].astype(np.float32)
    batch = spec["batch_size"]
    eval_batch = spec.get("eval_batch_size", batch)
    l2 = spec["embedding_regularizer"] / 2.0 * batch
    runs = []
    for r in range(spec["repeats"]):
        seed = spec["seed"] + r
        setup(seed, spec["threads"])
        model = DIN(
            columns,
            tables,
            dnn_use_bn=bool(p.get("batch_norm", True)),
            dnn_hidden_units=tuple(p.get("hidden_units", [200, 80])),
            dnn_activation=p.get("hidden_activations", "relu"),
            att_hidden_size=tuple(p.get("attention_hidden_units", [36])),
            att_activation="Dice" if p.get("attention_activation") == "dice" else "relu",
            att_weight_normalization=bool(p.get("attention_softmax", False)),
            l2_reg_dnn=spec.get("net_regularizer", 0.0) / 2.0 * batch,
            l2_reg_embedding=l2,
            dnn_dropout=p.get("net_dropout", 0.1),
            seed=seed,
        )
        bars_init(model)
        fit = fit_deepctr(spec, model, x, y, xv, splits["valid"]["y"], eval_batch)
        probs = model.predict(xt, batch_size=eval_batch).reshape(-1)
        test = splits["test"]
        auc, ll = auc_logloss(test["y"], probs)
        runs.append(
            {
                "seed": seed,
                "train_rows": len(y),
                "test_auc": auc,
                "test_logloss": ll,
                "test_gauc": gauc(test["y"], probs, test["group"]),
                "num_parameters": sum(t.numel() for t in model.parameters()),
                **fit,
            }
        )
        print(f"seed {seed}: test AUC {auc:.4f}, {fit}", flush=True)
    emit(
        "deepctr_torch",
        "din",
        runs,
        version=deepctr_torch.__version__,
        differences=DIFFERENCES,
    )


if __name__ == "__main__":
    main()
