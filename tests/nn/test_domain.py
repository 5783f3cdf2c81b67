"""Multi-domain layers: the domain input and its trained fallback slot (domain dropout),
star-topology layers, partitioned normalisation, the AdaptDHM router; and the models'
clear errors when a schema has no usable domain role."""

from __future__ import annotations

import pytest
import torch

from adrank.data.feature_map import FeatureMap, FieldInfo, RoleInfo
from adrank.data.schema import OOV_ID
from adrank.models import build_model
from adrank.models.adaptdhm import DistributionRouter
from adrank.nn.domain import DomainInput, GateNU, PartitionedNorm, StarLinear, domain_field


def fmap(domain: str | None = "d") -> FeatureMap:
    fields = (
        FieldInfo("user", "categorical", vocab_size=10),
        FieldInfo("d", "categorical", vocab_size=5),  # pad, OOV, 3 domains
        FieldInfo("n", "numeric"),
    )
    roles = {} if domain is None else {"domain": RoleInfo("domain", "__domain__", "vocab", domain)}
    return FeatureMap(fields, labels=("click",), roles=roles)


def test_domain_field_errors_name_the_column() -> None:
    assert domain_field(fmap()) == "d"
    with pytest.raises(ValueError, match="'domain' role"):
        domain_field(fmap(None))
    with pytest.raises(ValueError, match="'n' must also be a categorical feature"):
        domain_field(fmap("n"))
    for name in ("star", "pepnet"):
        with pytest.raises(ValueError, match="'domain' role"):
            build_model(name, fmap(None))


def test_domain_dropout_sends_a_share_of_training_rows_to_the_fallback_slot() -> None:
    layer = DomainInput(fmap(), domain_dropout=0.25)
    ids = torch.tensor([0, 1, 2, 3, 4, 9] + [3] * 4000)
    layer.eval()  # evaluation: no dropout; padding and out-of-range ids -> OOV / last slot
    features, slot = layer({"d": ids, "user": ids})
    assert slot[:6].tolist() == [OOV_ID, OOV_ID, 2, 3, 4, 4]
    assert torch.equal(features["d"], slot) and torch.equal(features["user"], ids)
    layer.train()
    torch.manual_seed(0)
    features, slot = layer({"d": ids})
    dropped = float((slot[6:] == OOV_ID).float().mean())
    assert 0.22 < dropped < 0.28
    assert torch.equal(features["d"], slot)  # a dropped row's domain feature is OOV too
    with pytest.raises(ValueError, match="domain_dropout"):
        DomainInput(fmap(), domain_dropout=1.0)


def test_star_linear_starts_as_the_shared_layer_and_gathers_each_rows_slot() -> None:
    torch.manual_seed(0)
    layer = StarLinear(4, 3, num_slots=5)
    x, slot = torch.randn(6, 4), torch.tensor([1, 2, 3, 4, 2, 1])
    shared = x @ layer.shared_weight + layer.shared_bias
    assert torch.allclose(layer(x, slot), shared, atol=1e-6)
    with torch.no_grad():
        layer.slot_weight[2].mul_(3.0)
        layer.slot_bias[2].fill_(1.0)
    expected = torch.stack(
        [
            x[i] @ (layer.shared_weight * layer.slot_weight[s]) + layer.shared_bias
            + layer.slot_bias[s]
            for i, s in enumerate(slot.tolist())
        ]
    )  # fmt: skip
    assert torch.allclose(layer(x, slot), expected, atol=1e-5)


def test_partitioned_norm_uses_each_domains_own_statistics() -> None:
    torch.manual_seed(0)
    norm = PartitionedNorm(2, num_slots=4, momentum=1.0)
    x = torch.cat([torch.randn(50, 2) * 3 + 10, torch.randn(50, 2) - 5])
    slot = torch.tensor([2] * 50 + [3] * 50)
    out = norm(x, slot)
    for s in (2, 3):  # each domain's rows are standardised by their own batch statistics
        part = out[slot == s]
        assert torch.allclose(part.mean(0), torch.zeros(2), atol=1e-5)
        assert torch.allclose(part.var(0, unbiased=False), torch.ones(2), atol=1e-3)
        assert torch.allclose(norm.running_mean[s], x[slot == s].mean(0), atol=1e-5)
    assert torch.equal(norm.running_mean[1], torch.zeros(2))  # an absent slot is untouched
    norm.eval()  # evaluation: the running statistics (momentum 1: this batch's)
    assert torch.allclose(norm(x, slot), out, atol=1e-3)


def test_gate_nu_lies_in_zero_two() -> None:
    gate = GateNU(3, 4, 8)
    out = gate(torch.randn(100, 3) * 10)
    assert out.shape == (100, 4) and bool((out > 0).all() and (out < 2).all())


def test_router_moves_centres_in_training_only() -> None:
    router = DistributionRouter(3, num_clusters=2, beta=0.5, iterations=3)
    before = router.centres.clone()
    x = torch.cat([torch.tensor([[1.0, 0, 0]]).repeat(20, 1), torch.tensor([[0, 1.0, 0]])])
    router.eval()
    router(x)
    assert torch.equal(router.centres, before)
    router.train()
    ids = router(x)
    assert not torch.equal(router.centres, before)
    assert torch.allclose(router.centres.norm(dim=1), torch.ones(2), atol=1e-5)
    assert ids.shape == (21,) and ids.dtype == torch.int64
    assert len(set(ids[:20].tolist())) == 1  # identical samples share a distribution


@pytest.mark.parametrize("name", ["star", "pepnet"])
def test_unknown_domain_takes_the_trained_fallback_slot(name: str) -> None:
    """An unknown domain (OOV: unseen in training, or missing) takes the OOV slot, whose own
    parameters and domain-feature embedding row receive gradient in training (domain
    dropout)."""
    torch.manual_seed(0)
    model = build_model(name, fmap(), domain_dropout=0.5)
    features = {
        "user": torch.randint(2, 10, (64,)),
        "d": torch.randint(2, 5, (64,)),
        "n": torch.randn(64),
    }
    model.train()
    model(features).sum().backward()
    slot_grads = [
        p.grad[OOV_ID]
        for n, p in model.named_parameters()
        if p.grad is not None and n.endswith(("slot_weight", "domain_embedding.weight"))
    ]
    assert slot_grads and any(float(g.abs().sum()) > 0 for g in slot_grads)
    emb = model.embedding  # the domain field's own OOV embedding row is trained too
    assert float(emb.fused.weight.grad[emb._offsets["d"] + OOV_ID].abs().sum()) > 0
    model.eval()
    with torch.no_grad():
        unknown = model({**features, "d": torch.full((64,), OOV_ID)})
        known = model(features)
    assert torch.isfinite(unknown).all()
    assert not torch.allclose(unknown, known)
