"""DeepCTR-Torch 0.3.0 run (inside ``benchmarks/.peers-venv``).

    benchmarks/.peers-venv/bin/python benchmarks/peers/deepctr_torch_run.py SPEC.json

Same ids, sizes, batch size, epochs, learning rate and threads as the adrank run; the
library's own ``fit`` loop (one ``fit(epochs=1)`` call per timed epoch, ``verbose=0``) and
its defaults otherwise (with ``converge``, ``common.fit_epochs`` adds the validation AUC, LR
decay and early stopping around those calls), except the initialization:
``common.bars_init`` (Xavier-normal Linear weights, normal(0, 1e-4) embeddings, as adrank
and the floor) replaces DeepCTR's normal(0, 1e-4) DNN weights, which learn so slowly that
3-epoch AUCs were 0.02-0.03 lower, and the optimizer: ``common.ClippedAdam`` clips the
gradient norm as adrank and the floor do (at ``grad_clip_norm * batch_size``, since
DeepCTR's loss is the batch sum).

* DeepFM -> ``DeepFM(dnn_hidden_units, dnn_dropout, dnn_use_bn)``.
* DCNv2 -> ``DCN(cross_parameterization='matrix', cross_num)`` (parallel, full rank). Its
  linear part is disabled (``linear_feature_columns=[]``) because DCNv2 has none.
* FinalMLP: not in DeepCTR-Torch -> reported as unavailable.

Regularization: DeepCTR's loss is the batch **sum** of BCE and its L2 term is
``l2 * ||W||^2``; adrank's is the batch mean + ``emb_reg / 2 * ||W||^2``. Since Adam is
invariant to the loss scale, ``l2 = emb_reg / 2 * batch_size`` gives the same objective.
"""

from __future__ import annotations

import numpy as np
from common import (
    auc_logloss,
    bars_init,
    emit,
    fit_deepctr,
    load_data,
    load_spec,
    setup,
)


def main() -> None:
    spec = load_spec()
    name = spec["model"]
    if name not in ("deepfm", "dcnv2"):
        emit("deepctr_torch", name, [], unavailable=f"DeepCTR-Torch has no {name} model")
        return
    import deepctr_torch
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DCN, DeepFM

    data = load_data(spec["data"])
    fields = [str(f) for f in data["fields"]]
    p = spec["params"]
    d = p.get("embedding_dim", 10)
    columns = [
        SparseFeat(f, vocabulary_size=int(v), embedding_dim=d)
        for f, v in zip(fields, data["vocab_sizes"], strict=True)
    ]
    l2 = spec["embedding_regularizer"] / 2.0 * spec["batch_size"]
    x = {f: data["train_x"][:, i] for i, f in enumerate(fields)}
    xt = {f: data["test_x"][:, i] for i, f in enumerate(fields)}
    xv = {f: data["valid_x"][:, i] for i, f in enumerate(fields)}
    y = data["train_y"].astype(np.float32)
    runs = []
    for r in range(spec["repeats"]):
        seed = spec["seed"] + r
        setup(seed, spec["threads"])
        if name == "deepfm":
            model = DeepFM(
                columns,
                columns,
                dnn_hidden_units=tuple(p.get("hidden_units", [400, 400, 400])),
                dnn_dropout=p.get("net_dropout", 0.2),
                dnn_use_bn=p.get("batch_norm", True),
                l2_reg_linear=l2,
                l2_reg_embedding=l2,
                l2_reg_dnn=0,
                seed=seed,
            )
        else:
            model = DCN(
                [],
                columns,
                cross_num=p.get("num_cross_layers", 4),
                cross_parameterization="matrix",
                dnn_hidden_units=tuple(p.get("parallel_dnn_hidden_units", [400, 400, 400])),
                dnn_dropout=p.get("net_dropout", 0.4),
                dnn_use_bn=p.get("batch_norm", True),
                l2_reg_linear=0,
                l2_reg_embedding=l2,
                l2_reg_cross=0,
                l2_reg_dnn=0,
                seed=seed,
            )
        bars_init(model)
        fit = fit_deepctr(spec, model, x, y, xv, data["valid_y"])
        probs = model.predict(xt, batch_size=65536)
        auc, ll = auc_logloss(data["test_y"], probs)
        runs.append(
            {"seed": seed, "train_rows": len(y), "test_auc": auc, "test_logloss": ll, **fit}
        )
    emit("deepctr_torch", name, runs, version=deepctr_torch.__version__)


if __name__ == "__main__":
    main()
