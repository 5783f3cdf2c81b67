"""Expert, gate, CGC and tower layers: shapes, hand-computed mixtures and PLE's gate wiring."""

from __future__ import annotations

import math

import pytest
import torch

from adrank.nn.experts import CGCLayer, ExpertBank, SoftmaxGate
from adrank.nn.towers import TaskTowers


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_expert_bank_stacks_independent_experts() -> None:
    bank = ExpertBank(6, num_experts=3, hidden_units=[8, 5]).eval()
    x = torch.randn(4, 6)
    out = bank(x)
    assert out.shape == (4, 3, 5) and bank.output_dim == 5
    for e, expert in enumerate(bank.experts):
        torch.testing.assert_close(out[:, e], expert(x))
    assert not torch.allclose(out[:, 0], out[:, 1])  # separately initialised experts


@pytest.mark.parametrize(
    ("num_experts", "hidden_units", "match"), [(0, [4], "num_experts"), (2, [], "hidden")]
)
def test_expert_bank_rejects_bad_sizes(num_experts: int, hidden_units: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ExpertBank(3, num_experts, hidden_units)


def test_softmax_gate_mixture_by_hand() -> None:
    gate = SoftmaxGate(input_dim=2, num_experts=2)
    with torch.no_grad():
        gate.linear.weight.zero_()
        gate.linear.bias.copy_(torch.log(torch.tensor([1.0, 3.0])))  # softmax -> [0.25, 0.75]
    experts = torch.tensor([[[4.0, 0.0], [0.0, 8.0]]])  # (B=1, E=2, H=2)
    x = torch.randn(1, 2)
    torch.testing.assert_close(gate.weights(x), torch.tensor([[0.25, 0.75]]))
    torch.testing.assert_close(gate(x, experts), torch.tensor([[1.0, 6.0]]))


def test_softmax_gate_weights_are_a_distribution() -> None:
    gate = SoftmaxGate(5, 4)
    w = gate.weights(torch.randn(7, 5) * 10)
    assert w.shape == (7, 4) and (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(7))


def _cgc(shared_gate: bool) -> CGCLayer:
    layer = CGCLayer(6, num_tasks=2, num_specific_experts=2, num_shared_experts=3,
                     hidden_units=[4], shared_gate=shared_gate)  # fmt: skip
    return layer.eval()


def test_cgc_gate_sizes_follow_the_paper() -> None:
    layer = _cgc(shared_gate=True)
    # task k's gate: its own 2 experts + the 3 shared ones; shared gate: all 2 * 2 + 3
    assert [g.num_experts for g in layer.task_gates] == [5, 5]
    assert layer.shared_gate is not None and layer.shared_gate.num_experts == 7
    assert _cgc(shared_gate=False).shared_gate is None
    x = torch.randn(3, 6)
    assert [o.shape for o in _cgc(True)([x, x, x])] == [(3, 4)] * 3
    assert [o.shape for o in _cgc(False)([x, x, x])] == [(3, 4)] * 2
    with pytest.raises(ValueError, match="3 inputs"):
        layer([x, x])
    with pytest.raises(ValueError, match="num_shared_experts"):
        CGCLayer(6, 2, 1, 0, [4])


def test_cgc_outputs_are_the_paper_mixtures() -> None:
    """Recompute every output from the experts and the gate weights."""
    layer = _cgc(shared_gate=True)
    a, b, s = torch.randn(3, 6), torch.randn(3, 6), torch.randn(3, 6)
    out = layer([a, b, s])
    shared = layer.shared_experts(s)  # (B, 3, H)
    own = [layer.task_experts[0](a), layer.task_experts[1](b)]  # (B, 2, H) each
    for k, x in enumerate((a, b)):
        w = layer.task_gates[k].weights(x)  # (B, 5)
        expected = (w.unsqueeze(-1) * torch.cat([own[k], shared], 1)).sum(1)
        torch.testing.assert_close(out[k], expected)
    w = layer.shared_gate.weights(s)  # (B, 7)
    expected = (w.unsqueeze(-1) * torch.cat([own[0], own[1], shared], 1)).sum(1)
    torch.testing.assert_close(out[2], expected)


def test_cgc_task_outputs_ignore_other_tasks_experts_but_shared_gate_sees_them() -> None:
    layer = _cgc(shared_gate=True)
    x = torch.randn(3, 6)
    before = layer([x, x, x])
    with torch.no_grad():  # change only task 1's experts
        for p in layer.task_experts[1].parameters():
            p.add_(1.0)
    after = layer([x, x, x])
    torch.testing.assert_close(after[0], before[0])  # task 0: own + shared experts only
    assert not torch.allclose(after[1], before[1])
    assert not torch.allclose(after[2], before[2])  # the shared gate mixes all experts


def test_cgc_shared_gate_can_select_a_task_expert() -> None:
    layer = _cgc(shared_gate=True)
    with torch.no_grad():  # all gate mass on expert 3 = task 1's second expert
        layer.shared_gate.linear.weight.zero_()
        layer.shared_gate.linear.bias.fill_(-math.inf).index_fill_(0, torch.tensor(3), 0.0)
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer([x, x, x])[2], layer.task_experts[1](x)[:, 1])


def test_task_towers_shapes_and_inputs() -> None:
    towers = TaskTowers(4, num_tasks=3, hidden_units=[5]).eval()
    x = torch.randn(6, 4)
    out = towers(x)
    assert out.shape == (6, 3)
    torch.testing.assert_close(out[:, 2], towers.towers[2](x).squeeze(-1))
    parts = [torch.randn(6, 4) for _ in range(3)]
    torch.testing.assert_close(towers(parts)[:, 1], towers.towers[1](parts[1]).squeeze(-1))
    with pytest.raises(ValueError, match="3 towers but 2 inputs"):
        towers(parts[:2])
