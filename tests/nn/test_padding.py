"""Padding is never attended, for every sequence layer.

Each layer is one entry of ``CASES``; adding a layer there runs it through every test:

* values at padded positions (embeddings, or the cross features derived from them) change
  nothing, in eval and in training mode; nor do, from the feature embedding on, the ids of
  aligned attributes at padded positions or the padding rows of the tables;
* an all-padding history (every user's first interaction) gives finite outputs, equal to
  the layer's documented empty-history value where it has one;
* gradients are finite with empty rows, and exactly zero at padded positions;
* left and right padding of the same behaviours give the same output;
* K candidates scored together equal each scored alone (the history-side work is shared);
* the layer traces to TorchScript and exports to ONNX, and both score a batch of another
  size (with an empty history) like the eager layer.

Peers shipped exactly these bugs: FuxiCTR #72, DeepCTR-Torch #128, RecBole #1483.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from adrank.data.feature_map import FeatureMap, FieldInfo
from adrank.nn.augru import AUGRU, InterestExtractor
from adrank.nn.behavior_transformer import BehaviorTransformer
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.pooling import pool_sequence
from adrank.nn.qin import AdaptiveSparseTargetAttention
from adrank.nn.simhash import ETA, SDIM
from adrank.nn.target_attention import DINAttention, MultiHeadTargetAttention
from adrank.nn.twin import TWINAttention

B, L, D, K = 5, 6, 8, 3
Run = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Case:
    """A sequence layer: ``build()`` makes it, ``run(layer, history, mask, target)`` returns
    a padding-side-invariant output (B, ·) or, with target (B, K, D), (B, K, ·);
    ``empty(layer, target)`` is the documented output for an all-padding history (None:
    only finiteness is promised); ``has_target``: the output depends on a target."""

    name: str
    build: Callable[[], nn.Module]
    run: Run
    empty: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    has_target: bool = True


def zeros_like_target(width: int) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    return lambda layer, target: target.new_zeros(*target.shape[:-1], width)


def attention_run(layer: nn.Module, hist: torch.Tensor, mask: torch.Tensor, t: torch.Tensor):
    return layer(t, hist, mask)


def pool_case(mode: str) -> Case:
    return Case(
        f"{mode}_pool",
        nn.Identity,
        lambda layer, hist, mask, t: pool_sequence(layer(hist), mask, mode),
        lambda layer, t: t.new_zeros(B, D),
        has_target=False,
    )


def extractor_run(layer: nn.Module, hist: torch.Tensor, mask: torch.Tensor, t: torch.Tensor):
    states = layer(hist, mask)  # (B, L, H)
    return torch.cat([pool_sequence(states, mask, "sum"), pool_sequence(states, mask, "max")], -1)


def bst_run(layer: nn.Module, hist: torch.Tensor, mask: torch.Tensor, t: torch.Tensor):
    out, out_mask = layer(t, hist, mask)  # (B, [K,] L + 1, D)
    behaviours = pool_sequence(out[..., :-1, :].flatten(0, -3), out_mask[..., :-1].flatten(0, -2))
    return torch.cat([out[..., -1, :], behaviours.view(out[..., -1, :].shape)], -1)


def twin_cross_run(layer: nn.Module, hist: torch.Tensor, mask: torch.Tensor, t: torch.Tensor):
    cross = hist[..., :6].unflatten(-1, (2, 3))  # (B, L, J=2, Dc=3), changes with padded values
    return layer(t, hist, mask, cross)


def qin_empty(layer: nn.Module, target: torch.Tensor) -> torch.Tensor:
    return layer.output.bias + target


CASES = [
    pool_case("mean"),
    pool_case("sum"),
    pool_case("max"),
    Case("din", lambda: DINAttention(D, (6, 4)), attention_run, zeros_like_target(D)),
    Case(
        "din_softmax",
        lambda: DINAttention(D, (6,), softmax=True),
        attention_run,
        zeros_like_target(D),
    ),
    Case(
        "din_prelu",
        lambda: DINAttention(D, (6,), activation="prelu"),
        attention_run,
        zeros_like_target(D),
    ),
    Case(
        "target_attention",
        lambda: MultiHeadTargetAttention(D, num_heads=2),
        attention_run,
        zeros_like_target(D),
    ),
    Case(
        "interest_extractor",
        lambda: InterestExtractor(D),
        extractor_run,
        lambda layer, t: t.new_zeros(B, 2 * D),
        has_target=False,
    ),
    Case("augru", lambda: AUGRU(D, D), attention_run, zeros_like_target(D)),
    Case("bst", lambda: BehaviorTransformer(D, num_heads=2, num_layers=2, max_len=4), bst_run),
    Case("sdim", lambda: SDIM(D, num_hashes=4, hash_bits=2), attention_run, zeros_like_target(D)),
    Case(
        "sdim_l2",
        lambda: SDIM(D, num_hashes=4, hash_bits=2, normalize=True),
        attention_run,
        zeros_like_target(D),
    ),
    Case(
        "eta",
        lambda: ETA(D, num_bits=16, top_k=3, num_heads=2),
        attention_run,
        zeros_like_target(D),
    ),
    Case(
        "twin", lambda: TWINAttention(D, top_k=3, num_heads=2), attention_run, zeros_like_target(D)
    ),
    Case(
        "twin_cross",
        lambda: TWINAttention(D, top_k=3, num_heads=2, num_cross=2, cross_dim=3),
        twin_cross_run,
        zeros_like_target(D),
    ),
    Case(
        "qin_attention",
        lambda: AdaptiveSparseTargetAttention(D, num_heads=2),
        attention_run,
        qin_empty,
    ),
]
IDS = [c.name for c in CASES]

#: real lengths per row and padding side: an empty row, left- and right-padded, full
LENGTHS = [0, 2, L, 3, 4]
LEFT = [True, True, True, False, True]


def make_layer(case: Case) -> nn.Module:
    torch.manual_seed(0)
    layer = case.build()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # visible weights everywhere (also cross betas, initialised to 0)
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return layer


def make_mask(lengths: list[int], left: list[bool]) -> torch.Tensor:
    pos = torch.arange(L)
    rows = [pos >= L - n if lt else pos < n for n, lt in zip(lengths, left, strict=True)]
    return torch.stack(rows)


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = make_mask(LENGTHS, LEFT)
    hist = torch.randn(B, L, D, generator=g)
    target = torch.randn(B, D, generator=g)
    candidates = torch.randn(B, K, D, generator=g)
    return hist, mask, target, candidates


def scramble_padding(hist: torch.Tensor, mask: torch.Tensor, seed: int = 7) -> torch.Tensor:
    noise = torch.randn(hist.shape, generator=torch.Generator().manual_seed(seed)) * 100
    return torch.where(mask.unsqueeze(-1), hist, noise)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_padded_values_change_nothing(case: Case, training: bool) -> None:
    layer = make_layer(case).train(training)
    hist, mask, target, candidates = inputs()
    for t in (target, candidates):
        expected = case.run(layer, hist, mask, t)
        got = case.run(layer, scramble_padding(hist, mask), mask, t)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_all_padding_history_is_finite_and_as_documented(case: Case, training: bool) -> None:
    layer = make_layer(case).train(training)
    hist, _, target, _ = inputs()
    empty = torch.zeros(B, L, dtype=torch.bool)
    out = case.run(layer, hist, empty, target)
    assert torch.isfinite(out).all()
    if case.empty is not None:
        torch.testing.assert_close(out, case.empty(layer, target), rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_finite_and_zero_at_padding(case: Case) -> None:
    layer = make_layer(case).train()
    hist, mask, target, _ = inputs()
    hist.requires_grad_(True)
    target.requires_grad_(True)
    for rows_mask in (mask, torch.zeros_like(mask)):  # some empty rows, then all empty
        layer.zero_grad()
        hist.grad = target.grad = None
        case.run(layer, hist, rows_mask, target).pow(2).sum().backward()
        grads = [p.grad for p in layer.parameters() if p.grad is not None]
        assert all(torch.isfinite(g).all() for g in grads)
        assert torch.isfinite(hist.grad).all()
        assert torch.equal(hist.grad[~rows_mask], torch.zeros_like(hist.grad[~rows_mask]))
        if target.grad is not None:
            assert torch.isfinite(target.grad).all()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_left_and_right_padding_agree(case: Case) -> None:
    layer = make_layer(case).eval()
    hist, mask, target, _ = inputs()
    right = make_mask(LENGTHS, [False] * B)
    moved = torch.zeros_like(hist)
    for row in range(B):
        moved[row, right[row]] = hist[row, mask[row]]  # same behaviours, same order
    torch.testing.assert_close(
        case.run(layer, moved, right, target),
        case.run(layer, hist, mask, target),
        rtol=0,
        atol=1e-5,
    )


@pytest.mark.parametrize("case", [c for c in CASES if c.has_target], ids=lambda c: c.name)
def test_candidates_together_equal_each_alone(case: Case) -> None:
    layer = make_layer(case).eval()
    hist, mask, _, candidates = inputs()
    together = case.run(layer, hist, mask, candidates)  # (B, K, ·)
    alone = torch.stack([case.run(layer, hist, mask, candidates[:, k]) for k in range(K)], 1)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_more_padding_changes_nothing(case: Case, training: bool) -> None:
    """Padding is not merely zeroed but absent: three more padded columns (with noise)
    leave every output as it was, also batch statistics in training (Dice)."""
    layer = make_layer(case).train(training)
    hist, mask, target, candidates = inputs()
    noise = torch.randn(B, 3, D, generator=torch.Generator().manual_seed(5))
    longer = torch.cat([noise, hist], 1)
    longer_mask = torch.cat([torch.zeros(B, 3, dtype=torch.bool), mask], 1)
    for t in (target, candidates):
        torch.testing.assert_close(
            case.run(layer, longer, longer_mask, t),
            case.run(layer, hist, mask, t),
            rtol=0,
            atol=1e-5,
        )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_each_row_equals_its_unpadded_history(case: Case) -> None:
    """Row by row, the output equals the layer applied to the real behaviours alone."""
    layer = make_layer(case).eval()
    hist, mask, target, _ = inputs()
    batch = case.run(layer, hist, mask, target)
    for row in range(B):
        n = int(mask[row].sum())
        if n == 0:
            continue
        alone = case.run(
            layer,
            hist[row, mask[row]].unsqueeze(0),
            torch.ones(1, n, dtype=torch.bool),
            target[row : row + 1],
        )
        torch.testing.assert_close(alone[0], batch[row], rtol=0, atol=1e-5)


class Wrapped(nn.Module):
    """A case as a module of positional tensors (what tracing and ONNX export take)."""

    def __init__(self, case: Case) -> None:
        super().__init__()
        self.case, self.layer = case, make_layer(case).eval()

    def forward(
        self, hist: torch.Tensor, mask: torch.Tensor, *target: torch.Tensor
    ) -> torch.Tensor:
        t = target[0] if target else hist.new_zeros(hist.shape[0], D)
        return self.case.run(self.layer, hist, mask, t)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_layer_exports_with_parity(case: Case, fmt: str) -> None:
    wrapped = Wrapped(case).eval()
    hist, mask, target, _ = inputs()
    example = (hist, mask, target) if case.has_target else (hist, mask)
    g = torch.Generator().manual_seed(9)
    other_mask = make_mask([0, 4, L], [True, False, True])  # another batch size
    other = (torch.randn(3, L, D, generator=g), other_mask, torch.randn(3, D, generator=g))
    other = other if case.has_target else other[:2]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = wrapped(*other)
        if fmt == "torchscript":
            got = torch.jit.trace(wrapped, example, check_trace=False)(*other)
        else:
            ort = pytest.importorskip("onnxruntime")
            names = ["hist", "mask", "target"][: len(example)]
            buffer = io.BytesIO()
            torch.onnx.export(
                wrapped,
                example,
                buffer,
                input_names=names,
                output_names=["out"],
                dynamic_axes={n: {0: "batch"} for n in [*names, "out"]},
                opset_version=17,
                dynamo=False,
            )
            session = ort.InferenceSession(buffer.getvalue())
            feeds = {n: x.numpy() for n, x in zip(names, other, strict=True)}
            got = torch.from_numpy(session.run(None, feeds)[0])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def embedded_history() -> tuple[FeatureEmbedding, dict[str, torch.Tensor]]:
    """A feature embedding of item + genre histories (2 attributes of width D / 2) and
    features with left-padded histories of lengths LENGTHS (all left)."""
    fields = (
        FieldInfo("item", "categorical", vocab_size=9),
        FieldInfo("genre", "categorical", vocab_size=5),
        FieldInfo(
            "hist_item", "sequence", vocab_size=9, max_len=L, embedding_group="item", target="item"
        ),
        FieldInfo(
            "hist_genre",
            "sequence",
            vocab_size=5,
            max_len=L,
            embedding_group="genre",
            aligned_with="hist_item",
        ),
    )
    emb = FeatureEmbedding(FeatureMap(fields, labels=("click",)), D // 2)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        emb.fused.weight.normal_(generator=g)
    mask = make_mask(LENGTHS, [True] * B)
    feats = {
        "item": torch.randint(2, 9, (B,), generator=g),
        "genre": torch.randint(2, 5, (B,), generator=g),
        "hist_item": torch.randint(2, 9, (B, L), generator=g) * mask,
        "hist_genre": torch.randint(2, 5, (B, L), generator=g) * mask,
    }
    return emb, feats


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_padded_ids_and_padding_rows_change_nothing(case: Case) -> None:
    layer = make_layer(case).eval()
    emb, feats = embedded_history()
    history = emb.embed_history(feats, "hist_item")
    expected = case.run(layer, history.values, history.mask, history.target)
    padded = feats["hist_item"] == 0
    gen = torch.Generator().manual_seed(4)
    # an aligned attribute may hold ids where the history is padding (e.g. an unknown genre
    # recorded for no item); the padding rows of the tables may drift from zero
    feats["hist_genre"] = torch.where(
        padded, torch.randint(1, 5, padded.shape, generator=gen), feats["hist_genre"]
    )
    with torch.no_grad():
        for offset in emb._offsets.values():
            emb.fused.weight[offset].normal_(generator=gen)
    history = emb.embed_history(feats, "hist_item")
    got = case.run(layer, history.values, history.mask, history.target)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
