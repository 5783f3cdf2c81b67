"""Interaction, cross and CIN layers against hand-written formulas."""

from __future__ import annotations

import pytest
import torch

from adrank.nn.cin import CIN
from adrank.nn.cross import (
    CrossInteraction,
    CrossNet,
    CrossNetV2,
    ExponentialCrossNetwork,
    LinearCrossNetwork,
)
from adrank.nn.interaction import (
    FMInteraction,
    InnerProductInteraction,
    PairwiseProduct,
    pair_indices,
)


@pytest.fixture
def emb() -> torch.Tensor:
    return torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))  # (B, F, D)


def explicit_pairs(num_fields: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(num_fields) for j in range(i + 1, num_fields)]


def test_fm_equals_explicit_pairwise_sum(emb: torch.Tensor) -> None:
    expected = sum((emb[:, i] * emb[:, j]).sum(-1) for i, j in explicit_pairs(emb.shape[1]))  # (B,)
    torch.testing.assert_close(FMInteraction()(emb), expected)
    bi = FMInteraction(reduce_sum=False)(emb)
    assert bi.shape == (3, 4)
    torch.testing.assert_close(bi.sum(-1), expected)


def test_pair_indices_order_and_validation() -> None:
    rows, cols = pair_indices(4)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == explicit_pairs(4)
    with pytest.raises(ValueError, match="at least 2 fields"):
        pair_indices(1)


def test_inner_products_equal_explicit_dot_products(emb: torch.Tensor) -> None:
    layer = InnerProductInteraction(num_fields=5)
    out = layer(emb)
    assert out.shape == (3, 10) and layer.num_pairs == 10
    for p, (i, j) in enumerate(explicit_pairs(5)):
        torch.testing.assert_close(out[:, p], (emb[:, i] * emb[:, j]).sum(-1))
    assert not layer.state_dict()  # index buffers are not persisted


def test_pairwise_products_equal_explicit_hadamard(emb: torch.Tensor) -> None:
    out = PairwiseProduct(num_fields=5)(emb)
    assert out.shape == (3, 10, 4)
    for p, (i, j) in enumerate(explicit_pairs(5)):
        torch.testing.assert_close(out[:, p], emb[:, i] * emb[:, j])


def test_crossnet_v1_one_layer_matches_formula() -> None:
    torch.manual_seed(0)
    x0 = torch.randn(6, 8)
    net = CrossNet(8, num_layers=1)
    layer: CrossInteraction = net.layers[0]
    with torch.no_grad():
        layer.bias.normal_()
    w, b = layer.weight.weight.squeeze(0), layer.bias
    expected = x0 * (x0 @ w).unsqueeze(-1) + b + x0
    torch.testing.assert_close(net(x0), expected)
    # two layers: x2 = x0 * (x1 . w2) + b2 + x1
    net2 = CrossNet(8, num_layers=2)
    x1 = net2.layers[0](x0, x0) + x0
    w2, b2 = net2.layers[1].weight.weight.squeeze(0), net2.layers[1].bias
    torch.testing.assert_close(net2(x0), x0 * (x1 @ w2).unsqueeze(-1) + b2 + x1)


def test_crossnet_v2_full_rank_matches_formula() -> None:
    torch.manual_seed(0)
    x0 = torch.randn(6, 8)
    net = CrossNetV2(8, num_layers=1)
    linear = net.layers[0]
    expected = x0 * (x0 @ linear.weight.T + linear.bias) + x0
    torch.testing.assert_close(net(x0), expected)


def test_crossnet_v2_low_rank_mixture() -> None:
    torch.manual_seed(0)
    x0 = torch.randn(6, 8)
    net = CrossNetV2(8, num_layers=2, low_rank=3, num_experts=4)
    assert net(x0).shape == (6, 8)
    # one expert, one layer: the gate is 1 and the layer is x0 * (U tanh(C tanh(V^T x)) + b) + x
    single = CrossNetV2(8, num_layers=1, low_rank=3, num_experts=1)
    u, v, c, b = single.u[0, 0], single.v[0, 0], single.c[0, 0], single.bias[0]
    h = torch.tanh(torch.tanh(x0 @ v) @ c.T)
    torch.testing.assert_close(single(x0), x0 * (h @ u.T + b) + x0)
    with pytest.raises(ValueError, match="low_rank"):
        CrossNetV2(8, num_layers=1, low_rank=0)


def test_cin_output_shape_and_one_layer_formula(emb: torch.Tensor) -> None:
    cin = CIN(num_fields=5, layer_units=[7, 6])
    assert cin(emb).shape == (3, 13) and cin.output_dim == 13
    one = CIN(num_fields=5, layer_units=[2])
    conv = one.layers[0]  # weight (H, F*F, 1): channel i*F + j mixes e_i * e_j
    products = torch.stack(
        [emb[:, i] * emb[:, j] for i in range(5) for j in range(5)], dim=1
    )  # (B, F*F, D)
    maps = torch.einsum("hc,bcd->bhd", conv.weight.squeeze(-1), products)
    maps = maps + conv.bias[None, :, None]
    torch.testing.assert_close(one(emb), maps.sum(-1))
    with pytest.raises(ValueError, match="at least one layer"):
        CIN(num_fields=5, layer_units=[])


@pytest.mark.parametrize("network", [LinearCrossNetwork, ExponentialCrossNetwork])
def test_dcnv3_networks_shape(network: type) -> None:
    x = torch.randn(4, 2, 10)  # (B, H, d)
    net = network(10, num_layers=3, dropout=0.1, batch_norm=True, num_heads=2)
    assert net(x).shape == (4, 2)
    with pytest.raises(ValueError, match="even"):
        network(9, num_layers=1)


def test_lcn_and_ecn_differ_only_after_the_first_layer() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 1, 10)
    lcn, ecn = LinearCrossNetwork(10, num_layers=1), ExponentialCrossNetwork(10, num_layers=1)
    ecn.load_state_dict(lcn.state_dict())
    torch.testing.assert_close(lcn(x), ecn(x))  # x_l == x_0 in the first layer
    lcn2, ecn2 = LinearCrossNetwork(10, num_layers=2), ExponentialCrossNetwork(10, num_layers=2)
    ecn2.load_state_dict(lcn2.state_dict())
    assert not torch.allclose(lcn2(x), ecn2(x))


def test_self_mask_formula_for_one_layer() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 1, 6)
    net = LinearCrossNetwork(6, num_layers=1, layer_norm=True, batch_norm=False)
    h = net.weights[0](x)
    mask = torch.relu(torch.nn.functional.layer_norm(h, (3,)))
    c = torch.cat([h, h * mask], dim=-1)
    x1 = x * (c + net.biases[0]) + x
    torch.testing.assert_close(net(x), net.output(x1).squeeze(-1))
