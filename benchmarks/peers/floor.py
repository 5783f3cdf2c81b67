"""Pure-PyTorch floor: DeepFM, DCNv2 and FinalMLP written by hand over in-memory tensors.

    python benchmarks/peers/floor.py SPEC.json      (spec format: benchmarks/peers/common.py)

The networks are hand-written here (no adrank import): one embedding table for all fields
(ids offset per field once, at load time), the BARS Frappe shapes, FuxiCTR/adrank's init
(embeddings normal std 1e-4, Linear Xavier-normal with zero bias) and the same objective
(mean BCE + emb_reg / 2 * ||embedding tables||^2, grad-norm clip, Adam with the fused
kernel). The loop is the minimal one: one permutation per epoch, contiguous slices of the
gathered tensors, no per-step host syncs. Categorical fields only (frappe has no numeric).
Shapes: x (B, F) int64 ids -> logits (B,).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
import torch
from common import auc_logloss, bars_init, emit, fit_epochs, load_data, load_spec, setup
from torch import nn


def mlp(dims: list[int], dropout: float, batch_norm: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in pairwise(dims):
        layers.append(nn.Linear(a, b))
        if batch_norm:
            layers.append(nn.BatchNorm1d(b))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers


class DeepFM(nn.Module):
    def __init__(self, total: int, num_fields: int, p: dict[str, Any]) -> None:
        super().__init__()
        d = p.get("embedding_dim", 10)
        hidden = list(p.get("hidden_units", [400, 400, 400]))
        self.emb = nn.Embedding(total, d)
        self.lin = nn.Embedding(total, 1)
        self.bias = nn.Parameter(torch.zeros(1))
        self.dnn = nn.Sequential(
            *mlp([num_fields * d, *hidden], p.get("net_dropout", 0.2), p.get("batch_norm", True)),
            nn.Linear(hidden[-1], 1),
        )
        self.tables = [self.emb, self.lin]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.emb(x)  # (B, F, D)
        fm = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1)  # (B,)
        return self.lin(x).sum((1, 2)) + self.bias + fm + self.dnn(e.flatten(1)).squeeze(-1)


class DCNv2(nn.Module):
    """Parallel structure, full-rank cross layers: x_{l+1} = x_0 * (W x_l + b) + x_l."""

    def __init__(self, total: int, num_fields: int, p: dict[str, Any]) -> None:
        super().__init__()
        d = p.get("embedding_dim", 10)
        width = num_fields * d
        hidden = list(p.get("parallel_dnn_hidden_units", [400, 400, 400]))
        self.emb = nn.Embedding(total, d)
        self.cross = nn.ModuleList(
            nn.Linear(width, width) for _ in range(p.get("num_cross_layers", 4))
        )
        self.dnn = nn.Sequential(
            *mlp([width, *hidden], p.get("net_dropout", 0.4), p.get("batch_norm", True))
        )
        self.fc = nn.Linear(width + hidden[-1], 1)
        self.tables = [self.emb]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.emb(x).flatten(1)  # (B, F*D)
        c = x0
        for layer in self.cross:
            c = c + x0 * layer(c)
        return self.fc(torch.cat([c, self.dnn(x0)], dim=-1)).squeeze(-1)


class FinalMLP(nn.Module):
    """Two MLP streams over gated flat embeddings (gate contexts: one field each, with their
    own embedding tables), fused by a multi-head bilinear layer."""

    def __init__(
        self, total: int, num_fields: int, p: dict[str, Any], context: list[tuple[int, int, int]]
    ) -> None:
        super().__init__()
        d = p.get("embedding_dim", 10)
        width = num_fields * d
        h1 = list(p.get("mlp1_hidden_units", [400]))
        h2 = list(p.get("mlp2_hidden_units", [100]))
        fs = list(p.get("fs_hidden_units", [400]))
        self.emb = nn.Embedding(total, d)
        # context = [(field index, offset into emb ids, vocab size)] for stream 1 and 2
        self.ctx_fields = [c[0] for c in context]
        self.ctx_offsets = [c[1] for c in context]
        self.ctx_emb = nn.ModuleList(nn.Embedding(c[2], d) for c in context)
        self.gates = nn.ModuleList(
            nn.Sequential(*mlp([d, *fs], 0.0, batch_norm=False), nn.Linear(fs[-1], width))
            for _ in context
        )
        self.mlp1 = nn.Sequential(
            *mlp([width, *h1], p.get("mlp1_dropout", 0.4), p.get("mlp1_batch_norm", True))
        )
        self.mlp2 = nn.Sequential(
            *mlp([width, *h2], p.get("mlp2_dropout", 0.4), p.get("mlp2_batch_norm", True))
        )
        self.heads = p.get("num_heads", 5)
        self.w_x = nn.Linear(h1[-1], 1)
        self.w_y = nn.Linear(h2[-1], 1)
        hx, hy = h1[-1] // self.heads, h2[-1] // self.heads
        self.w_xy = nn.Parameter(torch.empty(self.heads, hx, 1, hy))
        nn.init.normal_(self.w_xy, std=(2.0 / (self.heads * hx * hy + 1)) ** 0.5)
        self.tables = [self.emb, *self.ctx_emb]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = self.emb(x).flatten(1)  # (B, F*D)
        streams = []
        for i, gate in enumerate(self.gates):
            ctx = self.ctx_emb[i](x[:, self.ctx_fields[i]] - self.ctx_offsets[i])  # (B, D)
            streams.append(flat * (2.0 * torch.sigmoid(gate(ctx))))
        a = self.mlp1(streams[0])
        b = self.mlp2(streams[1])
        ha = a.view(a.shape[0], self.heads, -1)
        hb = b.view(b.shape[0], self.heads, -1)
        xy = torch.einsum("bhi,hioj,bhj->bo", ha, self.w_xy, hb)
        return (self.w_x(a) + self.w_y(b) + xy).squeeze(-1)


def build(spec: dict[str, Any], data: dict[str, Any]) -> tuple[nn.Module, torch.Tensor]:
    sizes = [int(v) for v in data["vocab_sizes"]]
    offsets = torch.tensor(np.r_[0, np.cumsum(sizes)[:-1]], dtype=torch.int64)
    total, f = int(sum(sizes)), len(sizes)
    p = spec["params"]
    name = spec["model"]
    if name == "deepfm":
        model: nn.Module = DeepFM(total, f, p)
    elif name == "dcnv2":
        if p.get("model_structure", "parallel") != "parallel" or p.get("use_low_rank_mixture"):
            raise SystemExit("floor DCNv2 implements the parallel full-rank structure only")
        model = DCNv2(total, f, p)
    elif name == "finalmlp":
        fields = [str(n) for n in data["fields"]]
        ctx = []
        for key in ("fs1_context", "fs2_context"):
            names = list(p.get(key, []))
            if len(names) != 1:
                raise SystemExit(f"floor FinalMLP needs exactly one {key} field, got {names}")
            i = fields.index(names[0])
            ctx.append((i, int(offsets[i]), sizes[i]))
        model = FinalMLP(total, f, p, ctx)
    else:
        raise SystemExit(f"floor has no model {name!r}")
    bars_init(model)
    return model, offsets


def one_run(spec: dict[str, Any], data: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train one fresh model (fixed epochs, or converged: ``common.fit_epochs``) and test it."""
    setup(seed, spec["threads"])
    model, offsets = build(spec, data)
    x = torch.from_numpy(data["train_x"]) + offsets  # (N, F) global ids
    y = torch.from_numpy(data["train_y"]).float()
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=spec["learning_rate"], fused=True)
    reg = spec["embedding_regularizer"] / 2.0
    clip = spec.get("grad_clip_norm")
    bs = spec["batch_size"]
    gen = torch.Generator().manual_seed(seed)

    def run_epoch() -> None:
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        xs, ys = x[perm], y[perm]
        for start in range(0, len(ys), bs):
            xb, yb = xs[start : start + bs], ys[start : start + bs]
            loss = nn.functional.binary_cross_entropy_with_logits(model(xb), yb)
            if reg > 0:
                loss = loss + reg * sum(tb.weight.pow(2).sum() for tb in model.tables)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(params, clip)
            opt.step()

    def score(split: str) -> np.ndarray:
        ids = torch.from_numpy(data[f"{split}_x"]) + offsets
        model.eval()
        with torch.inference_mode():
            out = [torch.sigmoid(model(ids[i : i + 65536])) for i in range(0, len(ids), 65536)]
        return torch.cat(out).numpy()

    fit = fit_epochs(spec, model, opt, run_epoch, lambda: score("valid"), data["valid_y"])
    auc, ll = auc_logloss(data["test_y"], score("test"))
    return {"seed": seed, "train_rows": len(y), "test_auc": auc, "test_logloss": ll, **fit}


def main() -> None:
    spec = load_spec()
    data = load_data(spec["data"])
    runs = [one_run(spec, data, spec["seed"] + r) for r in range(spec["repeats"])]
    emit("floor", spec["model"], runs)


if __name__ == "__main__":
    main()
