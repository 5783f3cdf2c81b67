"""``TrainConfig.sparse_embeddings``: sparse embedding gradients + lazy Adam."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from adrank.train import Trainer, fit
from adrank.train.optim import SparseDenseAdam, build_optimizer, clip_grad_norm
from tests.train.test_trainer import config, make_data, new_model


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_step_touches_only_rows_in_the_batch() -> None:
    model = new_model()
    opt = build_optimizer(model, 1e-2, torch.device("cpu"), sparse_embeddings=True)
    assert isinstance(opt, SparseDenseAdam)
    table = model.embedding.fused.weight  # type: ignore[union-attr]
    before = table.detach().clone()
    batch = make_data(64, 0).data
    model.training_outputs(batch.features).logits.sum().backward()
    assert table.grad is not None and table.grad.is_sparse
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    assert len(tables) == 2  # DeepFM: field embeddings + first-order weights
    grads = {id(p): p.grad for p in model.parameters() if p.grad is not None}
    assert all(g.is_sparse == (k in tables) for k, g in grads.items())
    opt.step()
    offsets = model.embedding.fused_cat_offsets  # type: ignore[union-attr]
    ids = torch.stack([batch.features[f"f{i}"] for i in range(4)], dim=1) + offsets
    used = torch.zeros(len(table), dtype=torch.bool)
    used[ids.unique()] = True
    changed = (table.detach() != before).any(dim=1)
    assert changed[used].all()
    assert not changed[~used].any()  # lazy Adam: untouched rows stay exactly as they were


def test_clip_grad_norm_matches_dense_for_sparse_grads() -> None:
    emb = torch.nn.Embedding(30, 4, sparse=True)
    lin = torch.nn.Linear(4, 1)
    ids = torch.tensor([1, 1, 5, 7, 7, 7])  # duplicates: coalescing must sum them first
    lin(emb(ids)).sum().backward()
    dense_emb_grad = emb.weight.grad.to_dense()  # type: ignore[union-attr]
    want_total = torch.linalg.vector_norm(
        torch.cat([dense_emb_grad.flatten(), lin.weight.grad.flatten(), lin.bias.grad.flatten()])  # type: ignore[union-attr]
    )
    total = clip_grad_norm([emb.weight, lin.weight, lin.bias], 0.1)
    torch.testing.assert_close(total, want_total)
    clipped = torch.cat(
        [emb.weight.grad.to_dense().flatten(), lin.weight.grad.flatten(), lin.bias.grad.flatten()]  # type: ignore[union-attr]
    )
    assert float(torch.linalg.vector_norm(clipped)) == pytest.approx(0.1, rel=1e-4)
    torch.testing.assert_close(
        emb.weight.grad.to_dense(),  # type: ignore[union-attr]
        dense_emb_grad * (0.1 / want_total),
    )


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e3])  # not clipped, near, far above
def test_clip_grad_norm_equals_torch_bit_for_bit_on_dense_grads(scale: float) -> None:
    """The direct foreach path gives torch's clip_grad_norm_ exactly (CPU results are
    pinned by code_parity and the leaderboard); a parameter without a gradient is skipped."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(50, 4), (7,), (16, 16), (3,)]
    ours = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    for a, b in zip(ours[:-1], theirs[:-1], strict=True):
        a.grad = torch.randn(a.shape, generator=gen) * scale
        b.grad = a.grad.clone()
    total = clip_grad_norm(iter(ours), 10.0)  # any iterable, as torch accepts
    want = torch.nn.utils.clip_grad_norm_(theirs, 10.0)
    assert torch.equal(total, want)
    for a, b in zip(ours[:-1], theirs[:-1], strict=True):
        assert torch.equal(a.grad, b.grad)  # type: ignore[arg-type]
    assert ours[-1].grad is None
    if scale >= 1.0:
        clipped = torch.cat([p.grad.flatten() for p in ours[:-1]])  # type: ignore[union-attr]
        assert float(torch.linalg.vector_norm(clipped)) == pytest.approx(10.0, rel=1e-5)


def test_clip_grad_norm_mixed_dtypes_falls_back_to_torch() -> None:
    a = torch.nn.Parameter(torch.ones(4))
    b = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    a.grad, b.grad = torch.full((4,), 3.0), torch.full((4,), 4.0, dtype=torch.float64)
    total = clip_grad_norm([a, b], 1.0)
    assert float(total) == pytest.approx(10.0)
    assert float(a.grad[0]) == pytest.approx(0.3, rel=1e-5)  # type: ignore[index]
    assert float(b.grad[0]) == pytest.approx(0.4, rel=1e-5)  # type: ignore[index]


def test_trains_and_resumes_with_sparse_embeddings(tmp_path: Path) -> None:
    cfg = config(
        max_epochs=3, patience=5, deterministic=True, sparse_embeddings=True,
        embedding_regularizer=0.01, embedding_regularizer_scope="batch",
    )  # fmt: skip
    train, valid, test = make_data(3000, 0), make_data(800, 1), make_data(800, 2)
    full_model = new_model()
    full = fit(full_model, train, valid, cfg, test=test, run_dir=tmp_path / "full")
    losses = [h["train_loss"] for h in full.history]
    assert losses[-1] < losses[0]
    assert full.test is not None and full.test["auc"] > 0.7

    class StopAfterEpoch2:
        def __getattr__(self, name: str):  # every callback hook is a no-op ...
            return lambda *a, **k: None

        def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
            if epoch == 2:  # ... except this one, after the epoch-2 checkpoint
                raise KeyboardInterrupt

    run_dir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        fit(new_model(), train, valid, cfg, run_dir=run_dir, callbacks=[StopAfterEpoch2()])
    resumed_model = new_model(seed=5)
    resumed = fit(resumed_model, train, valid, cfg, test=test, run_dir=run_dir, resume=True)
    for k, v in full_model.state_dict().items():
        assert torch.equal(v, resumed_model.state_dict()[k]), k
    assert resumed.test == full.test
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x).get("epoch") for x in lines] == [1, 2, 3, None]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"embedding_regularizer": 0.05}, "embedding_regularizer_scope='batch'"),
        ({"embedding_regularizer": 0.0, "amp": True, "device": "cpu"}, "amp"),
    ],
)
def test_incompatible_settings_are_clear_errors(overrides: dict, message: str) -> None:
    cfg = config(sparse_embeddings=True, **overrides)
    if cfg.amp and not torch.cuda.is_available():
        # amp is ignored off CUDA (with a warning), so there is nothing to reject there
        Trainer(new_model(), cfg)
        return
    with pytest.raises(ValueError, match=message):
        Trainer(new_model(), cfg)
