"""Device-resident and pinned loaders, GPU practice switches (issue 18).

Everything runs on CPU (a CPU "device" takes the same code paths without pinning or
streams); the tests marked ``cuda`` check the CUDA side and are skipped without a GPU.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from adrank.config import ConfigError, TrainConfig
from adrank.data.batches import Batch, InMemoryLoader, TensorData
from adrank.data.device_loader import (
    DeviceLoader,
    DevicePrefetcher,
    PinnedLoader,
    batch_nbytes,
    device_loader,
    feed_device,
    fits_on_device,
)
from adrank.data.feature_map import FeatureMap, FieldInfo
from adrank.models import build_model
from adrank.train import ProgressBar, Trainer
from adrank.train.optim import build_optimizer
from adrank.utils import seed_everything

HAS_CUDA = torch.cuda.is_available()

FIELDS = (
    FieldInfo("c0", "categorical", 30),
    FieldInfo("c1", "categorical", 7),
    FieldInfo("x0", "numeric"),
)
FEATURE_MAP = FeatureMap(FIELDS, ("click",))


@pytest.fixture(autouse=True)
def _restore_torch_globals() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def rich_data(n: int = 103, seed: int = 0) -> TensorData:
    """Columns of every kind: int64 and float 1-D features, a (N, 3) sequence, (N, 2)
    labels, and int and float roles."""
    gen = torch.Generator().manual_seed(seed)
    features = {
        "a": torch.randint(0, 9, (n,), generator=gen),
        "x": torch.rand(n, generator=gen),
        "seq": torch.randint(0, 9, (n, 3), generator=gen),
        "row": torch.arange(n),
    }
    roles = {"group": torch.arange(n) % 7, "weight": torch.rand(n, generator=gen)}
    return TensorData(Batch(features, torch.rand(n, 2, generator=gen), roles=roles))


def ctr_data(n: int = 600, seed: int = 0) -> TensorData:
    gen = torch.Generator().manual_seed(seed)
    features = {
        "c0": torch.randint(2, 30, (n,), generator=gen),
        "c1": torch.randint(2, 7, (n,), generator=gen),
        "x0": torch.rand(n, generator=gen),
    }
    labels = ((features["c0"] % 3 == 0) | (torch.rand(n, generator=gen) < 0.2)).float()
    return TensorData(Batch(features, labels[:, None]))


def assert_same_batches(expected: list[Batch], got: list[Batch]) -> None:
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        assert list(have.features) == list(want.features)
        for name, tensor in want.features.items():
            assert torch.equal(have.features[name].cpu(), tensor), name
            assert have.features[name].is_contiguous(), name
        assert torch.equal(have.labels.cpu(), want.labels)
        assert set(have.roles) == set(want.roles)
        for name, tensor in want.roles.items():
            assert torch.equal(have.roles[name].cpu(), tensor), name


LOADER_CASES = [
    {"shuffle": True},
    {"shuffle": False},
    {"shuffle": True, "drop_last": True},
    {"shuffle": True, "rank": 1, "world_size": 3},
    {"shuffle": False, "rank": 0, "world_size": 2},
]


@pytest.mark.parametrize("kwargs", LOADER_CASES)
@pytest.mark.parametrize("batch_size", [1, 17, 51, 200])
@pytest.mark.parametrize("cls", [DeviceLoader, PinnedLoader])
def test_cpu_device_loaders_yield_the_batches_of_in_memory_loader(
    cls: type[DeviceLoader], batch_size: int, kwargs: dict[str, Any]
) -> None:
    # 103 rows: batch 51 leaves a final 1-row batch, which a shuffled epoch drops
    data = rich_data()
    reference = InMemoryLoader(data, batch_size, seed=5, **kwargs)
    loader = cls(data, batch_size, "cpu", seed=5, **kwargs)
    for epoch in (0, 3):
        reference.set_epoch(epoch)
        loader.set_epoch(epoch)
        expected = list(reference)
        assert len(loader) == len(reference) == len(expected)
        assert_same_batches(expected, list(loader))


def test_every_row_once_per_epoch_and_rank_shards_are_disjoint() -> None:
    data = rich_data(n=120)
    seen_by_epoch = []
    for epoch in (0, 1):
        rows = []
        for rank in range(3):
            loader = DeviceLoader(data, 16, "cpu", shuffle=True, seed=1, rank=rank, world_size=3)
            loader.set_epoch(epoch)
            rows.append(torch.cat([b.features["row"] for b in loader]))
        everything = torch.cat(rows)
        assert sorted(everything.tolist()) == list(range(120))
        seen_by_epoch.append(everything)
    assert not torch.equal(seen_by_epoch[0], seen_by_epoch[1])  # reshuffled per epoch


def test_fits_on_device_uses_the_fraction_of_free_memory() -> None:
    data = rich_data()
    size = batch_nbytes(data.data)
    assert size == 103 * (8 + 4 + 3 * 8 + 8 + 2 * 4 + 8 + 4)
    cpu = torch.device("cpu")
    assert fits_on_device(data, cpu, 0.5, free_bytes=2 * size)
    assert not fits_on_device(data, cpu, 0.5, free_bytes=2 * size - 1)
    assert not fits_on_device(data, cpu, 0.0)
    assert fits_on_device(data, cpu, 0.5)  # the host already holds it


def test_device_loader_chooses_pinned_memory_when_the_split_does_not_fit() -> None:
    base = InMemoryLoader(rich_data(), 10, shuffle=True, seed=4, drop_last=True)
    base.set_epoch(2)
    small = device_loader(base, "cpu", 0.5, free_bytes=10)
    large = device_loader(base, "cpu", 0.5, free_bytes=10**9)
    assert type(small) is PinnedLoader and type(large) is DeviceLoader
    for loader in (small, large):
        assert (loader.batch_size, loader.shuffle, loader.seed, loader.drop_last) == (
            10, True, 4, True
        )  # fmt: skip
        assert loader.epoch == 2
        assert_same_batches(list(base), list(loader))


def test_feed_device_changes_nothing_off_cuda() -> None:
    loader = InMemoryLoader(rich_data(), 10)
    assert feed_device(loader, "cpu", 0.5) is loader


def test_prefetcher_passes_batches_length_and_epoch_through() -> None:
    base = InMemoryLoader(rich_data(), 25, shuffle=True, seed=2)
    prefetcher = DevicePrefetcher(base, "cpu")
    prefetcher.set_epoch(4)
    assert base.epoch == 4 and len(prefetcher) == len(base)
    assert (prefetcher.rank, prefetcher.world_size) == (0, 1)
    assert_same_batches(list(base), list(prefetcher))


def new_model(seed: int = 0) -> torch.nn.Module:
    seed_everything(seed)
    return build_model("deepfm", FEATURE_MAP, embedding_dim=4, hidden_units=[8])


def train_config(**overrides: Any) -> TrainConfig:
    base = {"batch_size": 64, "max_epochs": 2, "num_threads": 1, "progress": False, "seed": 3}
    return TrainConfig(**{**base, **overrides})


def test_cpu_training_keeps_the_in_memory_loader_and_a_device_loader_trains_identically() -> None:
    data, valid = ctr_data(), ctr_data(200, seed=1)
    trainer = Trainer(new_model(), train_config())
    assert type(trainer._train_loader(data)) is InMemoryLoader
    reference = trainer.fit(data, valid)
    loader = DeviceLoader(data, 64, "cpu", shuffle=True, seed=3)
    result = Trainer(new_model(), train_config()).fit(loader, valid)
    assert [h["train_loss"] for h in result.history] == [h["train_loss"] for h in reference.history]
    assert result.best_valid == reference.best_valid


def test_train_config_checks_the_gpu_settings() -> None:
    assert TrainConfig().compile_mode is None
    assert TrainConfig(compile=True).compile_mode == "default"
    assert TrainConfig(compile="off").compile_mode is None
    assert TrainConfig(compile="reduce-overhead").compile_mode == "reduce-overhead"
    with pytest.raises(ConfigError, match="compile must be"):
        TrainConfig(compile="fast")
    with pytest.raises(ConfigError, match="device_data_fraction"):
        TrainConfig(device_data_fraction=1.5)
    with pytest.raises(ConfigError, match="adam_implementation"):
        TrainConfig(adam_implementation="turbo")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tf32 must be"):
        TrainConfig(tf32="yes")  # type: ignore[arg-type]


def test_auto_gpu_settings_resolve_by_device() -> None:
    auto = TrainConfig()
    assert (auto.tf32, auto.compile, auto.compile_mode) == ("auto", "auto", None)
    assert auto.resolved_compile_mode("cuda", distributed=False) == "default"
    assert auto.resolved_compile_mode("cuda", distributed=True) is None
    assert auto.resolved_compile_mode("cpu", distributed=False) is None
    assert auto.resolved_tf32("cuda") and not auto.resolved_tf32("cpu")
    off = TrainConfig(tf32=False, compile=False)
    assert not off.resolved_tf32("cuda") and off.resolved_compile_mode("cuda", False) is None
    explicit = TrainConfig(compile="max-autotune")
    assert explicit.resolved_compile_mode("cpu", distributed=False) == "max-autotune"


def test_auto_gpu_settings_are_silent_and_eager_on_cpu(caplog: pytest.LogCaptureFixture) -> None:
    model = new_model()
    with caplog.at_level(logging.WARNING, logger="adrank.train.trainer"):
        trainer = Trainer(model, train_config())
    assert "ignored" not in caplog.text
    assert trainer._training_forward == model.training_outputs


@pytest.mark.parametrize("skipped", [0, 2])
def test_reduce_overhead_warns_once_when_inductor_skips_cuda_graphs(
    skipped: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The watcher reads inductor's skip counter before the first call and after the third
    (forward and backward both compiled by then): one warning naming the count, or none."""
    from torch._dynamo.utils import counters

    from adrank.train.step import watch_cudagraphs

    calls = []

    def forward(features: dict[str, torch.Tensor]) -> str:
        if not calls:  # "compiling" in the first call declines `skipped` graphs
            counters["inductor"]["cudagraph_skips"] += skipped
        calls.append(features)
        return "out"

    watched = watch_cudagraphs(forward)
    with caplog.at_level("WARNING", logger="adrank.train.trainer"):
        assert [watched({}) for _ in range(6)] == ["out"] * 6
    warned = [r.getMessage() for r in caplog.records if "CUDA graphs" in r.getMessage()]
    assert len(calls) == 6
    assert warned == ([] if not skipped else [warned[0]])
    if skipped:
        assert f"for {skipped} compiled graph(s)" in warned[0]


def test_each_trainer_forward_compiles_under_its_own_recompile_limit() -> None:
    """Closures of one function share its code object, and torch.compile's recompile limit
    is per code object: the third model below (limit 2) would run eagerly without
    ``own_code``. With it, every one is compiled (the eager backend keeps this fast)."""
    import torch._dynamo
    import torch._dynamo.utils as dynamo_utils

    from adrank.train.step import own_code

    def make(scale: float, wrap: bool) -> Any:
        layer = torch.nn.Linear(3, 3)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return layer(x) * scale  # a different constant: a guard that fails per model

        return torch.compile(own_code(forward) if wrap else forward, backend="eager")

    x = torch.randn(2, 3)
    for wrap, compiled in ((False, 2), (True, 4)):
        torch._dynamo.reset()
        dynamo_utils.counters.clear()
        with torch._dynamo.config.patch(recompile_limit=2):
            outputs = [make(float(i), wrap)(x) for i in range(4)]
        assert all(o.shape == (2, 3) for o in outputs)  # eager or not, the results come
        assert dynamo_utils.counters["frames"]["ok"] == compiled
    torch._dynamo.reset()


def test_eager_fallback_switches_for_good_after_a_compile_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from adrank.train.trainer import eager_fallback

    calls = {"compiled": 0, "eager": 0}

    def compiled(features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        calls["compiled"] += 1
        raise RuntimeError("inductor: unsupported op\nlong trace")

    def eager(features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        calls["eager"] += 1
        return features["x"] * 2, {}

    forward = eager_fallback(compiled, eager, "deepfm")
    x = {"x": torch.ones(3)}
    with caplog.at_level(logging.WARNING, logger="adrank.train.trainer"):
        first, second = forward(x), forward(x)
    assert torch.equal(first.logits, torch.full((3,), 2.0)) and torch.equal(
        second.logits, first.logits
    )
    assert calls == {"compiled": 1, "eager": 2}
    assert caplog.text.count("torch.compile failed on deepfm (RuntimeError: inductor") == 1


def test_eager_fallback_leaves_an_error_of_a_cuda_graph_recording_to_the_recorder(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An operation CUDA cannot record fails the recording, not the compiler: the error
    reaches StepGraph (which trains without graphs) and the forward stays compiled."""
    from adrank.train import step as step_module

    calls = {"compiled": 0, "eager": 0}

    def compiled(features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        calls["compiled"] += 1
        if calls["compiled"] == 1:
            raise RuntimeError("operation not permitted when stream is capturing")
        return features["x"] * 3, {}

    def eager(features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        calls["eager"] += 1
        return features["x"] * 2, {}

    forward = step_module.eager_fallback(compiled, eager, "deepfm")
    x = {"x": torch.ones(3)}
    monkeypatch.setattr(step_module, "capturing", lambda: True)
    with caplog.at_level(logging.WARNING, logger="adrank.train.trainer"):
        with pytest.raises(RuntimeError, match="stream is capturing"):
            forward(x)
        monkeypatch.setattr(step_module, "capturing", lambda: False)
        after = forward(x)
    assert torch.equal(after.logits, torch.full((3,), 3.0))  # still the compiled forward
    assert calls == {"compiled": 2, "eager": 0}
    assert "torch.compile failed" not in caplog.text


def test_tf32_and_compile_are_ignored_with_a_warning_on_cpu(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = new_model()
    with caplog.at_level(logging.WARNING, logger="adrank.train.trainer"):
        trainer = Trainer(model, train_config(tf32=True, compile=True))
    assert "tf32=True is ignored on cpu" in caplog.text
    assert "compile=True is ignored on cpu" in caplog.text
    assert trainer._training_forward == model.training_outputs
    flag = torch.backends.cuda.matmul.allow_tf32
    trainer.fit(ctr_data())
    assert torch.backends.cuda.matmul.allow_tf32 == flag


@pytest.mark.parametrize("implementation", ["auto", "fused", "foreach", "single_tensor"])
def test_adam_implementations_take_the_same_step(implementation: str) -> None:
    def one_step(impl: str) -> list[torch.Tensor]:
        model = new_model()
        optimizer = build_optimizer(model, 1e-2, torch.device("cpu"), implementation=impl)
        batch = ctr_data(64).data
        torch.nn.functional.binary_cross_entropy_with_logits(
            model(batch.features), batch.labels[:, 0]
        ).backward()
        optimizer.step()
        return [p.detach().clone() for p in model.parameters()]

    optimizer = build_optimizer(new_model(), 1e-2, torch.device("cpu"), implementation="auto")
    assert optimizer.defaults["fused"]  # "auto" is the fused kernel on CPU, as before
    for want, have in zip(one_step("single_tensor"), one_step(implementation), strict=True):
        torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="adam_implementation"):
        build_optimizer(new_model(), 1e-2, torch.device("cpu"), implementation="turbo")


class _CountingTrainer:
    steps_per_epoch = 100

    def __init__(self) -> None:
        self.reads = 0

    def running_loss(self) -> float:
        self.reads += 1
        return 0.5


@pytest.mark.parametrize(("min_interval_s", "reads"), [(0.0, 5), (3600.0, 0)])
def test_progress_bar_reads_the_loss_at_most_once_per_interval(
    min_interval_s: float, reads: int
) -> None:
    bar = ProgressBar(refresh_every=20, min_interval_s=min_interval_s)
    trainer = _CountingTrainer()
    bar.on_epoch_begin(trainer, 1)  # type: ignore[arg-type]
    try:
        for step in range(1, 101):
            bar.on_batch_end(trainer, step, 8)  # type: ignore[arg-type]
    finally:
        bar.teardown(trainer)  # type: ignore[arg-type]
    assert trainer.reads == reads


# ---------------------------------------------------------------------------- CUDA ----
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("kwargs", LOADER_CASES)
@pytest.mark.parametrize("cls", [DeviceLoader, PinnedLoader])
def test_cuda_loaders_place_batches_on_the_device(
    cls: type[DeviceLoader], kwargs: dict[str, Any]
) -> None:
    data = rich_data(n=1000)
    reference = InMemoryLoader(data, 64, seed=5, **kwargs)
    loader = cls(data, 64, "cuda", seed=5, **kwargs)
    batches = list(loader)
    assert len(batches) == len(loader) == len(reference)
    assert all(b.labels.is_cuda and all(t.is_cuda for t in b.features.values()) for b in batches)
    if cls is PinnedLoader:  # the host permutation: exactly InMemoryLoader's batches
        assert_same_batches(list(reference), batches)
    rows = torch.cat([b.features["row"] for b in batches]).cpu()
    expected = torch.cat([b.features["row"] for b in reference])
    if cls is PinnedLoader or not kwargs.get("shuffle") or not _drops_rows(kwargs, len(data)):
        assert sorted(rows.tolist()) == sorted(expected.tolist())
        return
    # The device permutation differs from the host one, so when an epoch drops rows
    # (drop_last, or a rank's share of the split) the rows dropped differ: check the
    # counts, that no row repeats, and that the ranks' shards are disjoint.
    assert len(rows) == len(expected) and len(set(rows.tolist())) == len(rows)
    world = kwargs.get("world_size", 1)
    shards = [
        torch.cat(
            [b.features["row"] for b in cls(data, 64, "cuda", seed=5, **{**kwargs, "rank": r})]
        )
        for r in range(world)
    ]
    every = torch.cat(shards).cpu().tolist()
    assert len(set(every)) == len(every) and set(every) <= set(range(len(data)))


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_prefetcher_copies_batches_one_ahead() -> None:
    base = InMemoryLoader(rich_data(n=500), 32, shuffle=True, seed=2)
    got = list(DevicePrefetcher(base, "cuda"))
    assert all(b.labels.is_cuda for b in got)
    assert_same_batches(list(base), got)


def _drops_rows(kwargs: dict[str, Any], n: int) -> bool:
    world = kwargs.get("world_size", 1)
    return bool(kwargs.get("drop_last")) or n % world != 0


def count_syncs(fn: Any) -> list[str]:
    """Host synchronisations CUDA reports while ``fn`` runs (sync debug mode "warn"), each
    as "file:line: message", so a failure names the line that synchronised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return [
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in caught
        # torch warns once, when the mode is first set, that the mode is a prototype
        if "synchroniz" in str(w.message) and "is a prototype" not in str(w.message)
    ]


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(("fraction", "kind"), [(0.5, DeviceLoader), (0.0, PinnedLoader)])
def test_cuda_trainer_steps_add_no_host_sync_to_a_plain_step(
    fraction: float, kind: type[DeviceLoader]
) -> None:
    """The trainer's steps, loader included, sync no more often than a bare
    forward/backward/fused-Adam step of the same model on batches already on the device
    (whatever torch's own kernels do, adrank adds nothing)."""
    data = ctr_data(4000)
    cfg = train_config(
        device="cuda", device_data_fraction=fraction, compile=False, cuda_graph=False
    )
    trainer = Trainer(new_model(), cfg)
    loader = trainer._train_loader(data)
    assert type(loader) is kind
    loader.set_epoch(0)
    batches = iter(loader)
    trainer.train_step(next(batches))  # first step: lazy CUDA initialisation
    torch.cuda.synchronize()
    steps = len(loader) - 1
    adrank = count_syncs(lambda: [trainer.train_step(b) for b in batches])

    model = new_model().cuda()
    optimizer = torch.optim.Adam(model.parameters(), fused=True)
    resident = [b.to("cuda") for b in InMemoryLoader(data, 64, shuffle=True)][:steps]

    def plain() -> None:
        for batch in resident:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(batch.features), batch.labels[:, 0]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    plain()  # warm-up
    torch.cuda.synchronize()
    bare = count_syncs(plain)
    assert len(adrank) <= len(bare), f"adrank {adrank} vs a bare step {bare}"
    assert torch.isfinite(torch.tensor(trainer.running_loss()))


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_fit_with_tf32_restores_the_flag_and_evaluates_on_the_device() -> None:
    before = torch.backends.cuda.matmul.allow_tf32
    cfg = train_config(device="cuda", tf32=True, max_epochs=1, compile=False)
    trainer = Trainer(new_model(), cfg)
    assert type(trainer._eval_loader(ctr_data(500, seed=1))) is DeviceLoader
    result = trainer.fit(ctr_data(2000), ctr_data(500, seed=1), ctr_data(500, seed=2))
    assert 0.0 <= result.best_valid["auc"] <= 1.0 and 0.0 <= result.test["auc"] <= 1.0
    assert torch.backends.cuda.matmul.allow_tf32 == before


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_stream_loader_is_prefetched_to_the_device(tmp_path: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from adrank.data.batches import ParquetStreamLoader

    batch = ctr_data(1000).data
    columns = {k: v.numpy() for k, v in batch.features.items()}
    table = pa.table({**columns, "click": batch.labels[:, 0].numpy()})
    pq.write_table(table, tmp_path / "train.parquet", row_group_size=300)
    stream = ParquetStreamLoader(tmp_path / "train.parquet", FEATURE_MAP, 128, shuffle=True)
    fed = feed_device(stream, "cuda", 0.5)
    assert isinstance(fed, DevicePrefetcher) and len(fed) == len(stream)
    got = list(fed)
    assert all(b.labels.is_cuda and b.features["c0"].is_cuda for b in got)
    assert_same_batches(list(stream), got)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_defaults_compile_the_training_forward_without_falling_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """compile=auto and tf32=auto on CUDA: the forward is compiled (a dynamo frame count
    above zero), no eager fallback, the TF32 flag restored after fit."""
    import torch._dynamo.utils as dynamo_utils

    before = torch.backends.cuda.matmul.allow_tf32
    dynamo_utils.counters.clear()
    trainer = Trainer(new_model(), train_config(device="cuda", max_epochs=1))
    with caplog.at_level("WARNING", logger="adrank.train.trainer"):
        result = trainer.fit(ctr_data(2000), ctr_data(500, seed=1))
    assert sum(dynamo_utils.counters["frames"].values()) > 0
    assert not [r for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert 0.0 <= result.best_valid["auc"] <= 1.0
    assert torch.backends.cuda.matmul.allow_tf32 == before


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_reduce_overhead_trains_like_the_default_compile() -> None:
    """compile='reduce-overhead' (CUDA graphs for the compiled forward and backward) trains
    to a finite loss, and over two epochs its losses stay close to the default mode's
    (the same kernels; only the replay differs). Whether inductor recorded the graphs or
    skipped them is in the benchmark's ``cudagraph_skips``."""
    results = {}
    for mode in ("default", "reduce-overhead"):
        torch.manual_seed(0)
        cfg = train_config(device="cuda", max_epochs=2, compile=mode, cuda_graph=False)
        trainer = Trainer(new_model(), cfg)
        results[mode] = trainer.fit(ctr_data(2000), ctr_data(500, seed=1))
    losses = {m: [h["train_loss"] for h in r.history] for m, r in results.items()}
    assert all(math.isfinite(x) for x in losses["reduce-overhead"])
    assert losses["reduce-overhead"] == pytest.approx(losses["default"], rel=0.05)
    assert 0.0 <= results["reduce-overhead"].best_valid["auc"] <= 1.0
