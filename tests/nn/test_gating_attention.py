"""Attention and gating layers: shapes and hand-computed values on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from adrank.data.feature_map import FeatureMap, FieldInfo
from adrank.nn.attention import MultiHeadSelfAttention
from adrank.nn.gating import (
    BilinearInteraction,
    FactorizedInteraction,
    FactorizedInteractionBlock,
    FeatureGenerationCNN,
    FeatureSelectionGate,
    FieldGate,
    InstanceGuidedMask,
    MaskBlock,
    MultiHeadBilinearFusion,
    SqueezeExcitation,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _identity_attention(dim: int, num_heads: int, **kwargs: object) -> MultiHeadSelfAttention:
    layer = MultiHeadSelfAttention(dim, dim, num_heads=num_heads, **kwargs)
    with torch.no_grad():
        for linear in (layer.query, layer.key, layer.value):
            linear.weight.copy_(torch.eye(dim))
    return layer.eval()


# ----- attention -------------------------------------------------------------------------


def test_attention_one_head_identity_matches_hand_computation() -> None:
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # (B=1, F=2, D=2)
    layer = _identity_attention(2, num_heads=1, use_residual=True, use_scale=False)
    # scores = x x^T = [[1, 0], [0, 4]]; rows softmaxed; out = A x + x, then ReLU.
    e = math.e
    a00, a01 = e / (e + 1), 1 / (e + 1)
    a10, a11 = 1 / (1 + e**4), e**4 / (1 + e**4)
    expected = torch.tensor([[[a00 + 1.0, 2 * a01], [a10, 2 * a11 + 2.0]]])
    torch.testing.assert_close(layer(x), expected)


def test_attention_scale_divides_scores_by_sqrt_head_dim() -> None:
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    layer = _identity_attention(2, num_heads=1, use_residual=False, use_scale=True)
    scores = torch.tensor([[1.0, 0.0], [0.0, 4.0]]) / math.sqrt(2)
    expected = torch.relu(torch.softmax(scores, dim=-1) @ x[0])
    torch.testing.assert_close(layer(x)[0], expected)


def test_attention_heads_attend_within_their_own_slice() -> None:
    x = torch.randn(3, 4, 6)
    layer = _identity_attention(6, num_heads=2, use_residual=False)
    expected = torch.cat(
        [torch.softmax(h @ h.transpose(1, 2), dim=-1) @ h for h in (x[..., :3], x[..., 3:])],
        dim=-1,
    )
    torch.testing.assert_close(layer(x), torch.relu(expected))


def test_attention_shapes_projection_residual_and_layer_norm() -> None:
    layer = MultiHeadSelfAttention(10, 16, num_heads=4, layer_norm=True, dropout=0.1)
    assert layer.residual is not None  # 10 -> 16 needs a projected residual
    out = layer(torch.randn(5, 7, 10))
    assert out.shape == (5, 7, 16)
    assert (out >= 0).all()
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadSelfAttention(10, 10, num_heads=3)


# ----- FiBiNET: SENET and bilinear -------------------------------------------------------


def test_senet_output_is_input_times_field_weights() -> None:
    emb = torch.randn(4, 5, 3)
    senet = SqueezeExcitation(num_fields=5, reduction_ratio=2)
    weights = senet.field_weights(emb)
    assert weights.shape == (4, 5, 1)
    torch.testing.assert_close(senet(emb), emb * weights)


def test_senet_weights_come_from_field_means() -> None:
    senet = SqueezeExcitation(num_fields=3, reduction_ratio=1)
    with torch.no_grad():
        senet.excitation[0].weight.copy_(torch.eye(3))
        senet.excitation[2].weight.copy_(torch.eye(3))
    emb = torch.tensor([[[1.0, 3.0], [-2.0, -4.0], [0.5, 0.5]]])
    # relu(I relu(I mean)) with means [2, -3, 0.5]
    torch.testing.assert_close(senet.field_weights(emb), torch.tensor([[[2.0], [0.0], [0.5]]]))


@pytest.mark.parametrize("bilinear_type", ["field_all", "field_each", "field_interaction"])
def test_bilinear_matches_explicit_formula(bilinear_type: str) -> None:
    emb = torch.randn(2, 3, 4)
    layer = BilinearInteraction(3, 4, bilinear_type)  # type: ignore[arg-type]
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = []
    for p, (i, j) in enumerate(pairs):
        w = {"field_all": layer.weight, "field_each": layer.weight[i]}.get(
            bilinear_type, layer.weight[p]
        )
        expected.append((emb[:, i] @ w) * emb[:, j])
    out = layer(emb)
    assert out.shape == (2, 3, 4)
    torch.testing.assert_close(out, torch.stack(expected, dim=1))


def test_bilinear_field_all_tiny_hand_case() -> None:
    emb = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # one pair (0, 1)
    layer = BilinearInteraction(2, 2, "field_all")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    # e0 W = [1 + 2, 2] = [3, 2]; times e1 = [9, 8]
    torch.testing.assert_close(layer(emb), torch.tensor([[[9.0, 8.0]]]))


def test_bilinear_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="bilinear_type"):
        BilinearInteraction(3, 4, "pairwise")  # type: ignore[arg-type]


# ----- MaskNet -----------------------------------------------------------------------------


def test_mask_block_shape_and_formula() -> None:
    flat, hidden = torch.randn(6, 20), torch.randn(6, 12)
    block = MaskBlock(20, 12, 8, hidden_activation="identity", reduction_ratio=2, layer_norm=False)
    out = block(flat, hidden)
    assert out.shape == (6, 8)
    torch.testing.assert_close(out, block.hidden[0](block.mask(flat) * hidden))
    assert InstanceGuidedMask(20, 12, reduction_ratio=2).net[0].out_features == 24
    assert MaskBlock(20, 20, 5, dropout=0.1)(flat, flat).shape == (6, 5)


# ----- FinalMLP ----------------------------------------------------------------------------


def _feature_map() -> FeatureMap:
    fields = (
        FieldInfo("user", "categorical", 9),
        FieldInfo("item", "categorical", 12),
        FieldInfo("hour", "categorical", 5),
    )
    return FeatureMap(fields=fields, labels=("click",))


@pytest.mark.parametrize("context", [(), ("user",), ("user", "item")])
def test_feature_selection_gates_lie_in_open_interval_0_2(context: tuple[str, ...]) -> None:
    fmap = _feature_map()
    gate = FeatureSelectionGate(fmap, 4, output_dim=12, context_fields=context, hidden_units=[8])
    features = {f.name: torch.randint(0, f.vocab_size, (7,)) for f in fmap.fields}
    gates = gate.gates(features, batch_size=7)
    assert gates.shape == (7, 12)
    assert (gates > 0).all() and (gates < 2).all()
    flat = torch.randn(7, 12)
    torch.testing.assert_close(gate(features, flat), flat * gates)
    if not context:  # a learned, sample-independent context
        torch.testing.assert_close(gates, gates[:1].expand(7, -1))


def test_feature_selection_unknown_context_field_is_named() -> None:
    with pytest.raises(ValueError, match="'region'"):
        FeatureSelectionGate(_feature_map(), 4, 12, context_fields=["region"])


def test_multi_head_bilinear_fusion_matches_explicit_formula() -> None:
    x, y = torch.randn(3, 6), torch.randn(3, 4)
    fusion = MultiHeadBilinearFusion(6, 4, output_dim=1, num_heads=2)
    expected = fusion.w_x(x) + fusion.w_y(y)
    for h in range(2):
        xh, yh = x[:, 3 * h : 3 * h + 3], y[:, 2 * h : 2 * h + 2]
        expected = expected + torch.einsum("bi,ij,bj->b", xh, fusion.w_xy[h, :, 0], yh)[:, None]
    out = fusion(x, y)
    assert out.shape == (3, 1)
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadBilinearFusion(5, 4, num_heads=2)


# ----- FinalNet ----------------------------------------------------------------------------


def test_field_gate_starts_as_identity_gate() -> None:
    emb = torch.randn(2, 4, 3)
    out = FieldGate(4)(emb)
    assert out.shape == (2, 8, 3)
    torch.testing.assert_close(out, torch.cat([emb, emb], dim=1))


def test_factorized_interaction_concat_and_sum() -> None:
    x = torch.randn(5, 7)
    layer = FactorizedInteraction(7, 6, residual_type="concat")
    h2, h1 = layer.linear(x).chunk(2, dim=-1)
    torch.testing.assert_close(layer(x), torch.cat([h2, h1 * h2], dim=-1))
    assert layer.linear.out_features == 6
    summed = FactorizedInteraction(7, 3, residual_type="sum")
    assert summed.linear.out_features == 6 and summed(x).shape == (5, 3)
    with pytest.raises(ValueError, match="even"):
        FactorizedInteraction(7, 5, residual_type="concat")


def test_factorized_interaction_block_shape() -> None:
    block = FactorizedInteractionBlock(12, [8, 4], "relu", dropout=0.1, batch_norm=True)
    assert block(torch.randn(6, 12)).shape == (6, 4)
    assert block.output_dim == 4


# ----- FGCNN -------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_fields", "new_fields"), [(10, 33), (3, 15)])
def test_feature_generation_cnn_shape(num_fields: int, new_fields: int) -> None:
    # Pooling by 2 (ceil): F=10 -> heights 5, 3, 2, 1; F=3 -> 2, 1, 1, 1; x3 channels each.
    layer = FeatureGenerationCNN(num_fields, 4, channels=(2, 3, 2, 2), recombined_channels=(3,) * 4)
    assert layer.num_new_fields == new_fields
    assert layer(torch.randn(5, num_fields, 4)).shape == (5, new_fields, 4)


def _reference_generation(layer: FeatureGenerationCNN, emb: torch.Tensor) -> torch.Tensor:
    """FGCNN generation via conv2d, BatchNorm2d statistics and max_pool2d on (B, C, h, D)."""
    x = emb.unsqueeze(1)
    out = []
    for conv, norm, pool, recombine in zip(
        layer.convs, layer.norms, layer.pooling_sizes, layer.recombine, strict=True
    ):
        x = torch.nn.functional.conv2d(x, conv.conv.weight, conv.conv.bias, padding="same")
        if isinstance(norm, torch.nn.BatchNorm1d):  # training-mode batch statistics
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
            w, b = norm.weight.view(1, -1, 1, 1), norm.bias.view(1, -1, 1, 1)
            x = (x - mean) / torch.sqrt(var + norm.eps) * w + b
        x = torch.nn.functional.max_pool2d(torch.tanh(x), (pool, 1), ceil_mode=True)
        out.append(recombine(x.flatten(1)).view(emb.shape[0], -1, emb.shape[2]))
    return torch.cat(out, dim=1)


@pytest.mark.parametrize(("num_fields", "kernels", "batch_norm"), [(10, 7, True), (5, 4, False)])
def test_feature_generation_matches_conv2d_reference(
    num_fields: int, kernels: int, batch_norm: bool
) -> None:
    # The GEMM-based field convolution, BatchNorm1d over (B*D, C, h) and reshape pooling must
    # equal conv2d(padding="same") + BatchNorm2d + max_pool2d(ceil_mode) on (B, C, h, D),
    # for odd and even kernels (even: PyTorch pads the extra row at the bottom).
    torch.manual_seed(0)
    layer = FeatureGenerationCNN(
        num_fields,
        6,
        channels=(3, 4, 2),
        kernel_heights=(kernels,) * 3,
        pooling_sizes=(2, 2, 3),
        recombined_channels=(2, 1, 2),
        batch_norm=batch_norm,
    )
    if batch_norm:
        for norm in layer.norms:
            torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
            torch.nn.init.uniform_(norm.bias, -0.5, 0.5)
    emb = torch.randn(7, num_fields, 6, requires_grad=True)
    got = layer(emb)
    want = _reference_generation(layer, emb)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    (g_got,) = torch.autograd.grad(got.square().sum(), emb)
    (g_want,) = torch.autograd.grad(want.square().sum(), emb)
    torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-5)
