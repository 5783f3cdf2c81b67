"""``adrank benchmark``: the BARS protocol over several models and seeds, with a
leaderboard, and ``--verify`` to re-train one recorded row."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adrank.cli import CacheDirOpt, DataDirOpt, app, console, fail, models_for_dataset
from adrank.utils import error_text


@app.command("benchmark")
def benchmark_cmd(
    dataset: Annotated[str, typer.Option(help="Dataset name.")] = "frappe",
    models: Annotated[
        str,
        typer.Option(
            help="Comma-separated model names, or 'all'. On a multi-task dataset a single-task "
            "model runs once per task (MODEL@TASK runs one task only) and is scored as a pair. "
            "Default: deepfm, dcnv2, finalmlp, finalnet.",
            show_default=False,
        ),
    ] = "deepfm,dcnv2,finalmlp,finalnet",
    seeds: Annotated[int, typer.Option(min=1, help="Number of seeds (2021, 2022, ...).")] = 3,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Output directory (default: runs/benchmark; with --verify: the committed "
            "results, results/DATASET in the benchmarks folder)."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override applied to every run.")
    ] = None,
    report_only: Annotated[
        bool, typer.Option(help="Only rebuild the leaderboard from OUTPUT/runs.jsonl.")
    ] = False,
    verify: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL",
            help="Re-train the row of MODEL and --seed recorded in OUTPUT/runs.jsonl in a "
            "temporary directory and compare test AUC and logloss (exit 1 unless equal to 1e-6).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="The seed of the row to --verify.")] = 2021,
    record: Annotated[
        bool,
        typer.Option(
            help="With --verify: append the outcome to verified.jsonl in OUTPUT, whose "
            "reproductions the leaderboard's code column names for rows recorded without a "
            "code version."
        ),
    ] = False,
    data_dir: DataDirOpt = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """BARS protocol: tuned config per model, N seeds; writes leaderboard.md/.csv/.png.

    Finished runs in OUTPUT are reused (for the same dataset and config only; another
    --set or dataset is refused), so an interrupted benchmark continues where it stopped.
    With --verify MODEL --seed S, re-trains that one recorded row instead."""
    from adrank.bench.report import to_markdown, write_report
    from adrank.bench.runner import base_model, run_benchmark
    from adrank.models import available_models

    if verify is not None:
        from adrank.bench.verify import verify_run

        results = (output or Path("benchmarks/results") / dataset) / "runs.jsonl"
        console.print(f"verify: {verify} seed {seed} from {results}")
        try:
            checked = verify_run(
                dataset,
                verify.strip().lower(),
                seed,
                results,
                overrides=set_ or [],
                data_dir=data_dir,
                cache_dir=cache_dir,
                force_progress=True,
            )
        except (KeyError, ValueError, RuntimeError, FileNotFoundError) as exc:
            fail(error_text(exc))
            return
        for line in checked.report():
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        if record:
            from adrank.bench.verify import record as record_result

            path = record_result(checked, results)
            console.print(f"recorded in {path}", markup=False, highlight=False, soft_wrap=True)
        if not checked.reproduced:
            raise typer.Exit(1)
        return
    output = output or Path("runs/benchmark")

    names = (
        models_for_dataset(dataset)
        if models == "all"
        else [m.strip().lower() for m in models.split(",") if m.strip()]
    )
    if not names:
        fail(f"--models {models!r} names no model; give comma-separated names or 'all'")
    unknown = [m for m in names if base_model(m) not in available_models()]
    if unknown:
        fail(f"unknown model(s) {unknown}; available: {', '.join(available_models())}")
    seed_list = [2021 + i for i in range(seeds)]

    def on_run(row) -> None:
        console.print(
            f"[green]done[/] {row.model} seed {row.seed}: test AUC {row.test_auc:.4f}, "
            f"logloss {row.test_logloss:.4f}, {row.epochs} epochs, {row.train_time_s:.0f}s"
        )

    if report_only:
        from adrank.bench.runner import read_results

        recorded = read_results(output / "runs.jsonl")
        wanted = {base_model(n) for n in names}
        runs = [r for (m, _), r in recorded.items() if models == "all" or base_model(m) in wanted]
        if not runs:
            fail(f"no recorded runs in {output / 'runs.jsonl'}")
        from adrank.bench.runner import claim_benchmark_dir
        from adrank.outputs import OutputDirError

        try:
            claim_benchmark_dir(output)
        except OutputDirError as exc:
            fail(str(exc))
        rows = write_report(runs, dataset, output)
        console.print(to_markdown(rows, dataset))
        return
    try:
        runs = run_benchmark(
            dataset,
            names,
            seed_list,
            output,
            data_dir=data_dir,
            cache_dir=cache_dir,
            overrides=set_ or [],
            on_run=on_run,
            force_progress=True,
        )
    except (KeyError, ValueError, RuntimeError, FileNotFoundError) as exc:
        fail(error_text(exc))
        return
    from adrank.bench.runner import read_results

    # the leaderboard shows every row the folder records, not only this call's models
    recorded = read_results(output / "runs.jsonl")
    rows = write_report(list(recorded.values()) or runs, dataset, output)
    console.print(to_markdown(rows, dataset))
    console.print(
        f"leaderboard: {output / 'leaderboard.md'}, {output / 'leaderboard.csv'}, "
        f"{output / 'leaderboard.png'}"
    )
