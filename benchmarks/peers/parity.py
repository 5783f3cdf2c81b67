"""Network parity: DeepCTR-Torch's DeepFM / DCN(matrix) against the floor's hand-written ones.

    benchmarks/.peers-venv/bin/python benchmarks/peers/parity.py SPEC.json

Builds both networks with the spec's sizes (dropout off, so train mode is deterministic),
copies DeepCTR's weights into the floor network, runs one 4096-row frappe batch through both
in train mode (batch-statistics BatchNorm) and compares the predicted probabilities, the
mean BCE and the gradients of the embedding table and the first DNN layer. Equal numbers
mean any AUC difference in ``train_speed`` comes from training (loop, seeds), not from the
networks. Output (``common.emit``): ``RESULT {"framework": "parity", "model", "runs": [],
"max_abs_prob_diff", "loss_diff", "grad_rel_diff": {...}, ...}``.
"""

from __future__ import annotations

import numpy as np
import torch
from common import bars_init, emit, load_data, load_spec, setup
from floor import DCNv2, DeepFM


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def main() -> None:
    spec = load_spec()
    name = spec["model"]
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DCN
    from deepctr_torch.models import DeepFM as DeepCTRDeepFM

    setup(spec["seed"], spec["threads"])
    data = load_data(spec["data"])
    fields = [str(f) for f in data["fields"]]
    sizes = [int(v) for v in data["vocab_sizes"]]
    p = {**spec["params"], "net_dropout": 0.0}
    d = p.get("embedding_dim", 10)
    cols = [
        SparseFeat(f, vocabulary_size=s, embedding_dim=d)
        for f, s in zip(fields, sizes, strict=True)
    ]
    common_kw = {"dnn_dropout": 0.0, "dnn_use_bn": p.get("batch_norm", True), "l2_reg_embedding": 0}
    floor_net: torch.nn.Module
    if name == "deepfm":
        peer = DeepCTRDeepFM(
            cols,
            cols,
            dnn_hidden_units=tuple(p.get("hidden_units", [400, 400, 400])),
            l2_reg_linear=0,
            l2_reg_dnn=0,
            **common_kw,
        )
        floor_net = DeepFM(sum(sizes), len(sizes), p)
    elif name == "dcnv2":
        peer = DCN(
            [],
            cols,
            cross_num=p.get("num_cross_layers", 4),
            cross_parameterization="matrix",
            dnn_hidden_units=tuple(p.get("parallel_dnn_hidden_units", [400, 400, 400])),
            l2_reg_linear=0,
            l2_reg_cross=0,
            l2_reg_dnn=0,
            **common_kw,
        )
        floor_net = DCNv2(sum(sizes), len(sizes), p)
    else:
        raise SystemExit(f"no parity check for {name}")
    bars_init(peer)
    linears = [m for m in floor_net.dnn if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        floor_net.emb.weight.copy_(torch.cat([peer.embedding_dict[f].weight for f in fields]))
        for mine, theirs in zip(linears, peer.dnn.linears, strict=False):
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
        if name == "deepfm":
            floor_net.lin.weight.copy_(
                torch.cat([peer.linear_model.embedding_dict[f].weight for f in fields])
            )
            linears[-1].weight.copy_(peer.dnn_linear.weight)  # DeepCTR: no bias, out.bias = 0
            linears[-1].bias.zero_()
        else:
            for i, layer in enumerate(floor_net.cross):
                layer.weight.copy_(peer.crossnet.kernels[i])
                layer.bias.copy_(peer.crossnet.bias[i].squeeze(-1))
            floor_net.fc.weight.copy_(peer.dnn_linear.weight)
            floor_net.fc.bias.zero_()
    offsets = torch.tensor(np.r_[0, np.cumsum(sizes)[:-1]], dtype=torch.int64)
    x = torch.from_numpy(data["train_x"][: spec["batch_size"]])
    y = torch.from_numpy(data["train_y"][: spec["batch_size"]]).float()
    peer.train()
    floor_net.train()
    prob_peer = peer(x.float()).squeeze(-1)
    logit_floor = floor_net(x + offsets)
    loss_peer = torch.nn.functional.binary_cross_entropy(prob_peer, y)
    loss_floor = torch.nn.functional.binary_cross_entropy_with_logits(logit_floor, y)
    loss_peer.backward()
    loss_floor.backward()
    emb_grad_peer = torch.cat([peer.embedding_dict[f].weight.grad for f in fields])
    emit(
        "parity",
        name,
        [],
        rows=len(y),
        max_abs_prob_diff=float((prob_peer - torch.sigmoid(logit_floor)).abs().max()),
        loss_diff=abs(float(loss_peer) - float(loss_floor)),
        grad_rel_diff={
            "embedding": rel(emb_grad_peer, floor_net.emb.weight.grad),
            "dnn_layer_1": rel(peer.dnn.linears[0].weight.grad, linears[0].weight.grad),
        },
    )


if __name__ == "__main__":
    main()
