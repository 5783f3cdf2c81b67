"""Leaderboard times measured under load are marked, so nobody quotes them as quiet."""

from __future__ import annotations

from adrank.bench.report import aggregate, to_markdown
from adrank.bench.runner import BenchmarkRun


def run(model: str, seed: int, load: float | None) -> BenchmarkRun:
    return BenchmarkRun(
        model=model, seed=seed, test_auc=0.98, test_logloss=0.15, valid_auc=0.98,
        num_parameters=10, epochs=3, best_epoch=2, train_time_s=100.0,
        train_samples_per_s=5000.0, run_dir="", load_average=load, cpus=2,
    )  # fmt: skip


def test_loaded_rows_are_marked_and_explained() -> None:
    runs = [run("deepfm", 2021, 1.1), run("dnn", 2021, 6.5), run("lr", 2021, None)]
    text = to_markdown(aggregate(runs, "frappe"), "frappe")
    lines = {
        line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")
    }
    assert "100 †" in lines["dnn"] and "5,000 †" in lines["dnn"]
    assert "†" not in lines["deepfm"] and "†" not in lines["lr"]
    assert "Trained while the machine was busy" in text
    quiet = to_markdown(aggregate(runs[:1], "frappe"), "frappe")
    assert "†" not in quiet


def test_a_run_filling_every_cpu_may_exceed_it_by_its_own_threads() -> None:
    """Quiet 2-thread runs on 2 CPUs end near load 2.1 (their own Python/data threads): not
    marked up to half a core above the CPU count; 1-thread runs and rows that predate the
    threads field keep the plain rule."""

    def with_threads(load: float, threads: int | None) -> BenchmarkRun:
        r = run("deepfm", 2021, load)
        r.threads = threads
        return r

    assert not with_threads(2.12, 2).timed_under_load
    assert not with_threads(2.5, 2).timed_under_load
    assert with_threads(2.6, 2).timed_under_load
    assert with_threads(2.12, 1).timed_under_load
    assert with_threads(2.12, None).timed_under_load
    assert not with_threads(1.9, None).timed_under_load
