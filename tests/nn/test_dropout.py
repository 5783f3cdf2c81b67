"""adrank.nn.Dropout is nn.Dropout by default; the mask statistics of it and of d50cf18's CPU
kernel (15-bit slices of int64 random words, issue 19), which ``train.dropout_kernel: fast``
opts into (``adrank.nn.dropout.dropout_kernel``); the statistics tests run on both."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adrank.nn import Dropout, MLPBlock
from adrank.nn.dropout import dropout, dropout_kernel, sliced_mask_dropout

IMPLEMENTATIONS = {"adrank": dropout, "d50cf18_kernel": sliced_mask_dropout}


def test_eval_mode_and_zero_p_are_identity() -> None:
    x = torch.randn(64, 8)
    layer = Dropout(0.3).eval()
    assert layer(x) is x
    assert Dropout(0.0).train()(x) is x


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_keep_rate_and_unbiased_scale(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(2000, 500)
    out = Dropout(p).train()(x)
    kept = out != 0
    # 1e6 Bernoulli draws: the keep rate's standard error is < 5e-4
    assert abs(kept.float().mean().item() - (1 - p)) < 3e-3
    scale = out[kept].unique()
    assert len(scale) == 1 and scale.item() == pytest.approx(1 / (1 - p), rel=1e-4)
    assert out.mean().item() == pytest.approx(1.0, abs=5e-3)


def test_it_is_torch_dropout_bit_for_bit() -> None:
    """Same seed, same mask, same values as F.dropout / nn.Dropout, forward and backward."""
    x = torch.randn(512, 100, requires_grad=True)
    torch.manual_seed(4)
    ours = Dropout(0.2).train()(x)
    (g_ours,) = torch.autograd.grad(ours.square().sum(), x)
    torch.manual_seed(4)
    ref = nn.Dropout(0.2).train()(x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    assert torch.equal(ours, ref) and torch.equal(g_ours, g_ref)


def test_mask_is_unstructured() -> None:
    """No position of four is kept more or less often than the others (the kernel drew four
    elements from one random word), and neighbours are not correlated."""
    torch.manual_seed(1)
    kept = (Dropout(0.5).train()(torch.ones(400_000)) != 0).float()
    by_slot = kept.view(-1, 4).mean(0)
    assert torch.all((by_slot - 0.5).abs() < 0.01), by_slot
    corr = torch.corrcoef(torch.stack([kept[:-1], kept[1:]]))[0, 1]
    assert abs(corr.item()) < 0.01


def test_gradient_is_mask_times_scale() -> None:
    torch.manual_seed(2)
    x = torch.randn(300, 40, requires_grad=True)
    out = Dropout(0.25).train()(x)
    grad = torch.randn_like(out)
    out.backward(grad)
    assert x.grad is not None
    kept = out != 0
    torch.testing.assert_close(x.grad, grad * kept / 0.75)


def test_seeded_runs_repeat_and_odd_sizes_work() -> None:
    x = torch.randn(7, 13, 3)
    torch.manual_seed(3)
    a = dropout(x, 0.4)
    torch.manual_seed(3)
    b = dropout(x, 0.4)
    torch.testing.assert_close(a, b)
    assert a.shape == x.shape
    # kept values are x / (1 - p)
    assert torch.all((a == 0) | torch.isclose(a, x / 0.6, rtol=1e-4))


def test_invalid_probability_is_rejected() -> None:
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            Dropout(p)


def test_mlp_block_uses_it_and_keeps_its_state_dict_layout() -> None:
    block = MLPBlock(8, [16, 16], "relu", dropout=0.2)
    assert any(isinstance(m, Dropout) for m in block.modules())
    assert not any(isinstance(m, nn.Dropout) for m in block.modules())
    assert Dropout(0.2).state_dict() == {}
    # Linear, ReLU, Dropout per layer, as with nn.Dropout: old checkpoints still load
    assert list(block.state_dict()) == ["net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"]


# --- Statistics of the mask -------------------------------------------------------------
# Each check compares a statistic with its sampling error under independent Bernoulli(1 - p)
# keeps and allows 5 standard errors (a false alarm about once in 1.7 million per check);
# the seeds are fixed, so the tests are deterministic.

BATCH, UNITS = 4096, 400  # one hidden layer of the BARS MLPs at batch 4096


def _keep_mask(impl: str, shape: tuple[int, ...], p: float, seed: int) -> torch.Tensor:
    """Float 0/1 mask of the elements ``impl`` keeps, drawn after ``manual_seed(seed)``."""
    torch.manual_seed(seed)
    return (IMPLEMENTATIONS[impl](torch.ones(shape), p) != 0).double()


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.flatten() - a.mean()
    b = b.flatten() - b.mean()
    return (a @ b / (a.norm() * b.norm())).item()


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_keep_rate_is_within_binomial_error(impl: str, p: float) -> None:
    n = 4_000_000
    kept = _keep_mask(impl, (n,), p, seed=10)
    assert abs(kept.mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_neighbouring_elements_are_uncorrelated(impl: str) -> None:
    """Lags 1-3 pair elements that can share one int64 random word, lag 4 the same position
    of neighbouring words, 400 the next row, 1248 and 1588 the lags of mt19937's recurrence
    (624 and 397 32-bit outputs, two per word and four elements per word)."""
    kept = _keep_mask(impl, (BATCH * UNITS,), 0.2, seed=11)
    bound = 5 / math.sqrt(kept.numel())
    for lag in (1, 2, 3, 4, 5, 8, 400, 794, 1248, 1588):
        assert abs(_corr(kept[lag:], kept[:-lag])) < bound, lag


@pytest.mark.parametrize("p", [0.2, 0.5])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_elements_sharing_a_random_word_are_independent(impl: str, p: float) -> None:
    """Positions 4k..4k+3: keep rates per position, pairwise correlations, and the joint
    distribution of the 16 keep/drop patterns (chi-square, 15 degrees of freedom)."""
    words = 1_000_000
    kept = _keep_mask(impl, (4 * words,), p, seed=12).view(words, 4)
    q = 1 - p
    rates = kept.mean(0)
    assert torch.all((rates - q).abs() < 5 * math.sqrt(p * q / words)), rates
    for i in range(4):
        for j in range(i + 1, 4):
            assert abs(_corr(kept[:, i], kept[:, j])) < 5 / math.sqrt(words), (i, j)
    codes = (kept * torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)).sum(1).long()
    counts = torch.bincount(codes, minlength=16).double()
    ones = torch.tensor([bin(c).count("1") for c in range(16)], dtype=torch.float64)
    expected = words * q**ones * p ** (4 - ones)
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 50.0, chi2  # P(chi-square_15 > 50) is about 1e-5


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_rows_and_units_of_a_batch_are_independent(impl: str) -> None:
    """Neighbouring rows are uncorrelated, no two rows share a mask, and the spread of the
    keep rate across rows (and across units) is binomial: masks shared between rows would
    widen it, masks stratified within a row would narrow it."""
    kept = _keep_mask(impl, (BATCH, UNITS), 0.2, seed=13)
    p, q = 0.2, 0.8
    for gap in (1, 2, 3, 64):
        pairs = kept[gap:].numel()
        assert abs(_corr(kept[gap:], kept[:-gap])) < 5 / math.sqrt(pairs), gap
    assert torch.unique(kept, dim=0).shape[0] == BATCH
    for dim, size, count in ((1, UNITS, BATCH), (0, BATCH, UNITS)):
        ratio = kept.mean(dim).var().item() / (p * q / size)
        # (count - 1) * ratio is chi-square with count - 1 degrees of freedom
        assert abs(ratio - 1) < 5 * math.sqrt(2 / (count - 1)), (dim, ratio)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_successive_calls_draw_fresh_uncorrelated_masks(impl: str) -> None:
    """Successive training steps: each call's mask is independent of the previous ones."""
    torch.manual_seed(14)
    x = torch.ones(BATCH, UNITS)
    masks = [(IMPLEMENTATIONS[impl](x, 0.2) != 0).double() for _ in range(4)]
    bound = 5 / math.sqrt(x.numel())
    for i in range(4):
        for j in range(i + 1, 4):
            assert abs(_corr(masks[i], masks[j])) < bound, (i, j)


def test_random_int64_words_have_63_uniform_bits() -> None:
    """What the kernel assumed of ``Tensor.random_()`` on int64: values in [0, 2**63) (two
    mt19937 outputs modulo 2**63), every one of bits 0-62 set half the time, bit 63 never."""
    torch.manual_seed(15)
    n = 1 << 21
    words = torch.empty(n, dtype=torch.int64).random_()
    assert words.min().item() >= 0
    ones = torch.stack([(words >> b) & 1 for b in range(63)]).double().mean(1)
    assert torch.all((ones - 0.5).abs() < 5 * 0.5 / math.sqrt(n)), ones


def test_ab_report_statistics_are_those_of_independent_keeps() -> None:
    """The statistics section of ``dropout_ab.md`` (benchmarks.dropout_ab.mask_statistics)."""
    from benchmarks.dropout_ab import ARMS, mask_statistics

    bound = 5 / math.sqrt(4096 * 400)
    for arm in ARMS:
        s = mask_statistics(arm, p=0.2)
        assert abs(s["keep_rate_z"]) < 5 and abs(s["keep_rate"] - 0.8) < 0.002
        for key in ("corr_lag1", "corr_lag4", "corr_rows", "corr_steps"):
            assert abs(s[key]) < bound, (arm, key, s[key])
        assert s["chi2_patterns"] < 50.0


def test_fast_kernel_is_used_only_inside_its_block() -> None:
    """``dropout_kernel("fast")`` routes every Dropout to the sliced-mask kernel, forward and
    backward; outside the block (and after it) the masks are F.dropout's again."""
    x = torch.randn(256, 40, requires_grad=True)
    layer = Dropout(0.3).train()

    def run(fn) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(9)
        out = fn(x)
        (grad,) = torch.autograd.grad(out.square().sum(), x)
        return out, grad

    with dropout_kernel("fast"):
        fast = run(layer)
    kernel = run(lambda t: sliced_mask_dropout(t, 0.3))
    after = run(layer)
    reference = run(lambda t: nn.functional.dropout(t, 0.3, training=True))
    assert torch.equal(fast[0], kernel[0]) and torch.equal(fast[1], kernel[1])
    assert torch.equal(after[0], reference[0]) and torch.equal(after[1], reference[1])
    assert not torch.equal(fast[0], reference[0])
    # the kernel's gradient is its mask times the scale, the same mask as the forward
    assert torch.equal((fast[1] != 0), (fast[0] != 0))


def test_fast_kernel_keeps_eval_mode_identity_and_rejects_unknown_names() -> None:
    x = torch.randn(8, 4)
    with dropout_kernel("fast"):
        assert Dropout(0.5).eval()(x) is x
        assert Dropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="dropout kernel must be one of"), dropout_kernel("bern"):
        pass


def test_config_names_the_same_kernels_as_the_layer() -> None:
    """adrank.config keeps its own copy (it does not import torch); they must agree."""
    from adrank import config
    from adrank.nn import dropout as layer

    assert config.DROPOUT_KERNELS == layer.DROPOUT_KERNELS
