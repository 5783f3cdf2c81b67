"""torch-rechub 0.9.0 run (inside ``benchmarks/.peers-venv``).

    benchmarks/.peers-venv/bin/python benchmarks/peers/rechub_run.py SPEC.json

Same ids, sizes, batch size, epochs, learning rate and threads as the adrank run, through
the library's own pipeline: ``DataGenerator`` data loaders and
``CTRTrainer.train_one_epoch`` (timed per epoch); test AUC from the model's eval-mode
predictions over rechub's test loader. With ``converge``, ``common.fit_epochs`` adds the
validation AUC, LR decay and early stopping around ``train_one_epoch``.
The model is initialized with ``common.bars_init`` (Xavier-normal Linear weights,
normal(0, 1e-4) embeddings), as adrank and the floor are, and trained with
``common.ClippedAdam`` (gradient-norm clipping as in adrank and the floor).

* DeepFM -> ``DeepFM(deep_features, fm_features, mlp_params)`` (rechub's MLP always has
  BatchNorm; its first-order term is a Linear over the FM embeddings, its design).
* DCNv2 -> ``DCNv2(n_cross_layers, model_structure='parallel', use_low_rank_mixture=False)``.
* FinalMLP: not in torch-rechub 0.9.0 -> reported as unavailable.

Regularization: rechub's ``RegularizationLoss(embedding_l2=l)`` adds ``l * ||W||^2`` to the
mean BCE, so ``l = emb_reg / 2`` matches adrank; Adam weight decay is 0.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import torch
from common import (
    ClippedAdam,
    auc_logloss,
    bars_init,
    emit,
    fit_epochs,
    load_data,
    load_spec,
    setup,
)


def predict(model: torch.nn.Module, loader: Any) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels over a torch-rechub data loader, in eval mode."""
    model.eval()
    probs, labels = [], []
    with torch.no_grad():
        for xb, yb in loader:
            probs.append(model(xb).numpy())
            labels.append(yb.numpy())
    return np.concatenate(probs), np.concatenate(labels)


def main() -> None:
    spec = load_spec()
    name = spec["model"]
    if name not in ("deepfm", "dcnv2"):
        emit("torch_rechub", name, [], unavailable=f"torch-rechub has no {name} model")
        return
    import torch_rechub
    from torch_rechub.basic.features import SparseFeature
    from torch_rechub.models.ranking import DCNv2, DeepFM
    from torch_rechub.trainers import CTRTrainer
    from torch_rechub.utils.data import DataGenerator

    data = load_data(spec["data"])
    fields = [str(f) for f in data["fields"]]
    p = spec["params"]
    d = p.get("embedding_dim", 10)
    feats = [
        SparseFeature(f, vocab_size=int(v), embed_dim=d)
        for f, v in zip(fields, data["vocab_sizes"], strict=True)
    ]
    x = {f: data["train_x"][:, i] for i, f in enumerate(fields)}
    xv = {f: data["valid_x"][:, i] for i, f in enumerate(fields)}
    xt = {f: data["test_x"][:, i] for i, f in enumerate(fields)}
    y = data["train_y"].astype(np.float32)
    runs = []
    for r in range(spec["repeats"]):
        seed = spec["seed"] + r
        setup(seed, spec["threads"])
        loaders = DataGenerator(x, y).generate_dataloader(
            x_val=xv,
            y_val=data["valid_y"],
            x_test=xt,
            y_test=data["test_y"],
            batch_size=spec["batch_size"],
        )
        train_loader, val_loader, test_loader = loaders
        if name == "deepfm":
            mlp = {
                "dims": list(p.get("hidden_units", [400, 400, 400])),
                "dropout": p.get("net_dropout", 0.2),
                "activation": "relu",
            }
            model = DeepFM(deep_features=feats, fm_features=feats, mlp_params=mlp)
        else:
            mlp = {
                "dims": list(p.get("parallel_dnn_hidden_units", [400, 400, 400])),
                "dropout": p.get("net_dropout", 0.4),
                "activation": "relu",
            }
            model = DCNv2(
                feats,
                n_cross_layers=p.get("num_cross_layers", 4),
                mlp_params=mlp,
                model_structure="parallel",
                use_low_rank_mixture=False,
            )
        bars_init(model)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = CTRTrainer(
                model,
                optimizer_fn=ClippedAdam,
                optimizer_params={
                    "lr": spec["learning_rate"],
                    "weight_decay": 0.0,
                    "max_norm": spec.get("grad_clip_norm"),
                },
                regularization_params={"embedding_l2": spec["embedding_regularizer"] / 2.0},
                n_epoch=spec["epochs"],
                device="cpu",
                model_path=tmp,
            )
            fit = fit_epochs(
                spec,
                model,
                trainer.optimizer,
                # the lambdas run inside fit_epochs, within this iteration (defaults bind them)
                lambda t=trainer, dl=train_loader: t.train_one_epoch(dl),
                lambda m=model, dl=val_loader: predict(m, dl)[0],
                data["valid_y"],
            )
            probs, labels = predict(model, test_loader)
        auc, ll = auc_logloss(labels, probs)
        runs.append(
            {"seed": seed, "train_rows": len(y), "test_auc": auc, "test_logloss": ll, **fit}
        )
    emit("torch_rechub", name, runs, version=getattr(torch_rechub, "__version__", "0.9.0"))


if __name__ == "__main__":
    main()
