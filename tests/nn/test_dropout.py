"""adrank.nn.Dropout: the CPU mask drawn from random bits behaves like nn.Dropout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adrank.nn import Dropout, MLPBlock
from adrank.nn.dropout import dropout


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


def test_mask_is_unstructured() -> None:
    """Each of the four 15-bit slices per random word is uniform: no position in the word is
    kept more or less often than the others, and neighbours are not correlated."""
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
    # the scale is the exact inverse keep rate of p rounded to 1/32768: within 2e-5 of 1/0.6
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
