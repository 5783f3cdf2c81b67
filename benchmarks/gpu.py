"""GPU training throughput: adrank against a hand-written loop on the same GPU (issue 18).

    python -m benchmarks gpu [--cells deepfm-8192,...] [--rows 8000000] [--repeats 3]
        [--epochs 2] [--device cuda] [--frappe PATH] [--results-dir DIR]
        [--ablation] [--accuracy] [--profile] [--session] [--budget-s S]
    python -m benchmarks gpu --export-frappe PATH      # here, where polars is installed

Both sides train **the same network**: the adrank model module (``build_model``), built
from the same seed. Only the training machinery differs:

* **adrank**: what a new user writes, ``Trainer(model, TrainConfig(device=...))
  .fit(InMemoryLoader(data, batch, shuffle=True))`` with the split on the host and every
  other setting at its default (Adam lr 1e-3 with adrank's default kernel, gradient
  clipping at norm 10, no regularizer, no validation);
* **loop**: a plain PyTorch loop: the split's tensors resident on the device (one matrix per
  dtype), a device ``randperm`` per epoch, one gather per matrix per batch, BCE with
  logits, fused Adam lr 1e-3, no clipping, no validation.

Cells: DeepFM and DCNv2 on **synthetic** Criteo-shaped tensors (13 numeric + 26
categorical fields with Criteo's cardinalities capped at 1M, uniform ids, uniform numeric
values, random labels; :mod:`adrank.data.synth` holds the cardinalities) at batches 8,192
and 65,536, and FinalMLP on the real ``frappe`` split at 4,096, read from a tensor file made
here by ``--export-frappe`` (the GPU machine has no polars). Networks: DeepFM with embedding
dim 16 and an MLP 400x3 with batch norm and dropout 0.2 (95M parameters, the issue's);
DCNv2 with embedding dim 16 and adrank's defaults otherwise (parallel, 4 cross layers, MLP
400x3, batch norm, dropout 0.4); FinalMLP with the committed frappe config.

Timed region: the training steps of an epoch, ending with one device sync, the same on both
sides (adrank's ``train_time_s``; validation and checkpoints are outside it). Each run
trains a fresh model for ``--epochs`` epochs; epoch 1 is warm-up, the run's rate is rows x
(epochs - 1) / time of epochs 2..E. A cell reports the median over ``--repeats`` runs
(seeds ``seed, seed + 1, ...``) and adrank / loop. Honesty check: on an H200 the loop must
reach 0.9x the issue's reference rates (DeepFM at 8M rows: 2.06M samples/s at batch 8,192,
4.03M at 65,536); on another GPU the results say so and quote the loop's rates.

Variants: ``--variants reduce-overhead,cuda-graph`` times adrank with other settings
(:data:`VARIANTS`) beside its defaults in every cell, same seeds: candidates for a CUDA
default (``cuda-graph``: the whole step recorded as one CUDA graph, ``TrainConfig.cuda_graph``;
a run whose recording failed is recorded as an error, not as its eager speed).

Modes: ``--ablation`` trains adrank on DeepFM at ``--ablation-batch`` with each GPU setting
toggled one at a time (``gpu_ablation``); ``--accuracy`` trains DeepFM on frappe (committed
config, validation early stopping) on ``--device`` and on the CPU, ``--accuracy-seeds`` seeds
each, and checks |mean test AUC difference| <= 2 x pooled std (``gpu_accuracy``;
``--accuracy-variant auto`` trains the device side with the variant that beat the defaults
in the cells, if one did; ``--cpu-reference runs.jsonl`` takes the CPU side from recorded
runs); ``--profile`` times and profiles DeepFM steps of adrank, its variants and the loop
(:mod:`benchmarks.gpu_profile`, ``gpu_profile.md``). ``--session`` runs the cells (for at
most ``--cells-budget-s``), the profile, the accuracy check, the ablation and the tuned loop
in that order within ``--budget-s`` seconds, skipping what no longer fits. Results go to
``<results-dir>/gpu*.{json,md}``.

Imports neither polars nor the serving extras (the GPU machine has neither).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from adrank.config import TrainConfig
from adrank.data.batches import InMemoryLoader
from adrank.models.registry import build_model
from adrank.train.step import cudagraph_skips
from adrank.train.trainer import Trainer
from adrank.utils import seed_everything
from benchmarks.gpu_accuracy import accuracy_variant, run_accuracy
from benchmarks.gpu_data import Split, criteo_split, export_frappe, frappe_split
from benchmarks.gpu_report import (
    ablation_markdown,
    accuracy_markdown,
    cells_markdown,
    device_name,
    machine,
    write,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_FRAPPE = Path(__file__).resolve().parent / ".scratch" / "gpu" / "frappe.pt"
LEARNING_RATE = 1e-3
#: the issue's hand-written loop on one H200 (PyTorch 2.11), DeepFM, 8M rows: samples/s
REFERENCE_LOOP = {("deepfm", 8192): 2_055_899.0, ("deepfm", 65536): 4_031_564.0}
HONESTY_SHARE = 0.9
CRITEO_PARAMS: dict[str, dict[str, Any]] = {
    "deepfm": {
        "embedding_dim": 16,
        "hidden_units": [400, 400, 400],
        "net_dropout": 0.2,
        "batch_norm": True,
    },
    "dcnv2": {"embedding_dim": 16},
}


@dataclass(frozen=True)
class Cell:
    name: str
    model: str
    data: str  # "criteo" (synthetic) or "frappe"
    batch_size: int


CELLS = {
    c.name: c
    for c in (
        Cell("deepfm-8192", "deepfm", "criteo", 8192),
        Cell("deepfm-65536", "deepfm", "criteo", 65536),
        Cell("dcnv2-8192", "dcnv2", "criteo", 8192),
        Cell("dcnv2-65536", "dcnv2", "criteo", 65536),
        Cell("finalmlp-frappe-4096", "finalmlp", "frappe", 4096),
    )
}
#: adrank settings toggled one at a time by --ablation, against adrank's CUDA defaults
#: (tf32, compile and cuda_graph all ``auto``: all on for one CUDA device). The first
#: session's ablation from fp32 eager defaults is in benchmarks/results/gpu_session1/;
#: session 16's, from the defaults before cuda_graph=auto, in benchmarks/results/gpu_session16/.
ABLATION: dict[str, dict[str, Any]] = {
    "defaults (tf32 + compile + cuda_graph)": {},
    "no cuda_graph (the defaults of sessions 2-15)": {"cuda_graph": False},
    "fp32 eager, one launch per kernel (session 1's defaults)": {
        "tf32": False,
        "compile": False,
        "cuda_graph": False,
    },
    "no compile (eager forward in the graph)": {"compile": False},
    "no tf32": {"tf32": False},
    "bf16 amp": {"amp": True},
    "no gradient clipping": {"grad_clip_norm": None},
    "compile reduce-overhead, no cuda_graph": {"compile": "reduce-overhead", "cuda_graph": False},
}

#: adrank settings the cells time beside adrank's defaults (``--variants``): candidates for a
#: CUDA default, each one more side per cell (a failing variant is recorded, not fatal).
VARIANTS: dict[str, dict[str, Any]] = {
    "reduce-overhead": {"compile": "reduce-overhead", "cuda_graph": False},
    "cuda-graph": {"cuda_graph": True},
    "no-cuda-graph": {"cuda_graph": False},
}


class Budget:
    """Seconds left for ``--session`` (``None``: unlimited)."""

    def __init__(self, seconds: float | None) -> None:
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def part(self, seconds: float | None) -> Budget:
        """A budget that ends after ``seconds`` or with this one, whichever is first."""
        if seconds is None:
            return self
        part = Budget(seconds)
        if self.deadline is not None:
            part.deadline = min(self.deadline, part.deadline)  # type: ignore[type-var]
        return part


# ------------------------------------------------------------------------- the two sides ----
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(rows: int, epoch_times: list[float]) -> float:
    timed = epoch_times[1:] if len(epoch_times) > 1 else epoch_times
    return rows * len(timed) / max(sum(timed), 1e-12)


def adrank_run(
    split: Split,
    model: str,
    batch_size: int,
    epochs: int,
    seed: int,
    device: torch.device,
    threads: int | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """adrank as a user runs it: InMemoryLoader(shuffle=True) + Trainer(device=...)."""
    seed_everything(seed)
    net = build_model(model, split.feature_map, **split.params)
    config = TrainConfig(
        device=str(device),
        batch_size=batch_size,
        learning_rate=LEARNING_RATE,
        max_epochs=epochs,
        patience=epochs + 1,
        seed=seed,
        num_threads=threads,
        progress=False,
        **settings,
    )
    loader = InMemoryLoader(split.data, batch_size, shuffle=True, seed=seed)
    skips = cudagraph_skips()
    trainer = Trainer(net, config)
    result = trainer.fit(loader)
    graph = trainer.step_graph  # cuda_graph true or auto (the default) on CUDA
    if graph is not None and graph.failed and settings.get("cuda_graph") is True:
        # it trained eagerly: not the variant's speed (under ``auto``, the default, the
        # eager fallback is what a user gets, so that run is kept with its failure)
        raise RuntimeError(f"cuda_graph: recording the step failed ({graph.failure})")
    times = [h["train_time_s"] for h in result.history]
    losses = [h["train_loss"] for h in result.history]
    del net, result, trainer
    return {
        "seed": seed,
        "epoch_train_s": times,
        "train_loss": losses,
        "samples_per_s": _rate(len(split.data), times),
        "cudagraph_skips": cudagraph_skips() - skips,  # graphs inductor chose not to record
        **({} if graph is None else {"cuda_graph_counts": dict(graph.counts)}),
        **({} if graph is None or not graph.failed else {"cuda_graph_failure": graph.failure}),
    }


def loop_run(
    split: Split,
    model: str,
    batch_size: int,
    epochs: int,
    seed: int,
    device: torch.device,
    tuned: bool = False,
) -> dict[str, Any]:
    """The hand-written loop (see the module docstring), on the same network; ``tuned``:
    with adrank's CUDA settings too (TF32 matmuls, the forward ``torch.compile``d)."""
    seed_everything(seed)
    net = build_model(model, split.feature_map, **split.params).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, fused=True)
    saved_tf32 = torch.backends.cuda.matmul.allow_tf32
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor] = net
    if tuned and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        forward = torch.compile(net)  # type: ignore[assignment]
    try:
        return _loop(net, forward, optimizer, split, batch_size, epochs, seed, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved_tf32


class LoopSide:
    """The hand-written loop's state: the split resident on ``device`` (one (N, C) matrix
    per dtype, labels (N,)), the network, its fused Adam and forward; :meth:`step` trains
    on the rows ``idx`` (a device tensor) and returns the detached loss."""

    def __init__(
        self,
        net: torch.nn.Module,
        forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
        optimizer: torch.optim.Optimizer,
        split: Split,
        device: torch.device,
    ) -> None:
        batch = split.data.data
        self.net, self.forward, self.optimizer = net, forward, optimizer
        self.by_dtype: dict[torch.dtype, list[str]] = {}
        for name, t in batch.features.items():
            self.by_dtype.setdefault(t.dtype, []).append(name)
        self.matrices = {
            dtype: torch.stack([batch.features[n].to(device) for n in names], dim=1)
            for dtype, names in self.by_dtype.items()
        }
        self.labels = batch.labels[:, 0].contiguous().to(device)

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        features = {}
        for dtype, names in self.by_dtype.items():
            block = self.matrices[dtype][idx]
            features.update({n: block[:, j] for j, n in enumerate(names)})
        loss = F.binary_cross_entropy_with_logits(self.forward(features), self.labels[idx])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def _loop(
    net: torch.nn.Module,
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    split: Split,
    batch_size: int,
    epochs: int,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    side = LoopSide(net, forward, optimizer, split, device)
    rows = len(side.labels)
    stop = rows - 1 if rows > 1 and rows % batch_size == 1 else rows  # adrank's 1-row rule
    gen = torch.Generator(device=device).manual_seed(seed)
    times, losses = [], []
    net.train()
    for _ in range(epochs):
        _sync(device)
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        perm = torch.randperm(rows, generator=gen, device=device)
        for first in range(0, stop, batch_size):
            idx = perm[first : min(first + batch_size, stop)]
            loss_sum += side.step(idx) * len(idx)
        losses.append(float(loss_sum) / stop)  # the epoch's only sync
        times.append(time.perf_counter() - start)
    del side
    return {
        "seed": seed,
        "epoch_train_s": times,
        "train_loss": losses,
        "samples_per_s": _rate(rows, times),
    }


def _free_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ cells ----
def run_cells(
    args: argparse.Namespace, budget: Budget, on_update: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Every cell's runs, repeat by repeat across the cells (so a budget cut leaves every
    cell with as many runs as possible); ``on_update`` gets the results after each run."""
    device = torch.device(args.device)
    cells = [CELLS[c] for c in args.cells]
    splits = {cell.name: _cell_split(cell, args) for cell in cells}
    results: dict[str, Any] = {
        cell.name: {
            "model": cell.model,
            "batch_size": cell.batch_size,
            "data": splits[cell.name].source,
            "rows": len(splits[cell.name].data),
            "adrank": [],
            "loop": [],
            "variants": {v: {"settings": VARIANTS[v], "runs": []} for v in args.variants},
        }
        for cell in cells
    }
    for r in range(args.repeats):
        seed = args.seed + r
        for cell in cells:
            out = results[cell.name]
            if budget.left() < args.min_left_s:
                out["skipped"] = f"time budget: {len(out['adrank'])} of {args.repeats} runs"
                continue
            split = splits[cell.name]
            for side, run in (("loop", loop_run), ("adrank", adrank_run)):
                out[side].append(run(split, cell.model, cell.batch_size, args.epochs, seed, device))
                _free_device(device)
            line = (
                f"{cell.name} seed {seed}: samples/s loop {out['loop'][-1]['samples_per_s']:,.0f}"
                f", adrank {out['adrank'][-1]['samples_per_s']:,.0f}"
            )
            for v in args.variants:
                try:
                    r = adrank_run(split, cell.model, cell.batch_size, args.epochs, seed, device,
                                   **VARIANTS[v])  # fmt: skip
                except Exception as exc:  # a variant that fails is a result too
                    r = {"seed": seed, "error": f"{type(exc).__name__}: {exc}"[:500]}
                _free_device(device)
                out["variants"][v]["runs"].append(r)
                rate = r.get("samples_per_s")
                line += f", {v} {rate:,.0f}" if rate is not None else f", {v} {r.get('error')}"
            print(line, flush=True)
            _summarize(out, cell, args, device)
            on_update(results)
    for cell in cells:
        _summarize(results[cell.name], cell, args, device)
    return results


def run_tuned(
    args: argparse.Namespace,
    budget: Budget,
    results: dict[str, Any],
    on_update: Callable[[dict[str, Any]], None],
) -> None:
    """The loop with adrank's CUDA settings (TF32, compiled forward), ``--tuned-repeats``
    runs per cell, added to ``results`` as ``loop_tuned``: how adrank's defaults compare
    with a loop tuned the same way."""
    device = torch.device(args.device)
    for r in range(args.tuned_repeats):
        for name, out in results.items():
            if budget.left() < args.min_left_s:
                out["tuned_skipped"] = "time budget"
                continue
            cell = CELLS[name]
            split = _cell_split(cell, args)
            run = loop_run(split, cell.model, cell.batch_size, args.epochs, args.seed + r, device,
                           tuned=True)  # fmt: skip
            out.setdefault("loop_tuned", []).append(run)
            _free_device(device)
            print(
                f"{name} seed {args.seed + r}: tuned loop {run['samples_per_s']:,.0f}", flush=True
            )
            _summarize(out, cell, args, device)
            on_update(results)


def _cell_split(cell: Cell, args: argparse.Namespace) -> Split:
    if cell.data == "criteo":
        criteo = criteo_split(args.rows, args.max_cardinality)
        return Split(criteo.feature_map, criteo.data, criteo.source, CRITEO_PARAMS[cell.model])
    return frappe_split(args.frappe, cell.model)


def _summarize(
    out: dict[str, Any], cell: Cell, args: argparse.Namespace, device: torch.device
) -> None:
    for side in ("loop", "adrank", "loop_tuned"):
        rates = [r["samples_per_s"] for r in out.get(side, [])]
        out[f"{side}_samples_per_s"] = statistics.median(rates) if rates else None
    loop, ours = out["loop_samples_per_s"], out["adrank_samples_per_s"]
    out["ratio"] = ours / loop if loop and ours else None
    tuned = out["loop_tuned_samples_per_s"]
    out["ratio_tuned"] = ours / tuned if tuned and ours else None
    for v in out.get("variants", {}).values():
        rates = [r["samples_per_s"] for r in v["runs"] if "samples_per_s" in r]
        v["samples_per_s"] = statistics.median(rates) if rates else None
        rate = v["samples_per_s"]
        v["ratio"] = rate / loop if loop and rate else None
        v["vs_defaults"] = rate / ours if ours and rate else None
        v["errors"] = [r["error"] for r in v["runs"] if "error" in r]
    ref = REFERENCE_LOOP.get((cell.model, cell.batch_size))
    if ref is not None and loop is not None:
        name = device_name(device)
        out["reference_loop_samples_per_s"] = ref
        if "H200" not in name:
            out["honesty"] = (
                f"not an H200 ({name}): the loop reached {loop:,.0f} samples/s (the issue's "
                f"H200 loop: {ref:,.0f})"
            )
        elif args.rows != 8_000_000:
            out["honesty"] = f"{args.rows:,} rows, not the reference's 8M: not comparable"
        else:
            ok = loop >= HONESTY_SHARE * ref
            out["honesty_ok"] = ok
            out["honesty"] = f"loop {loop / ref:.2f}x the issue's H200 loop ({ref:,.0f}): " + (
                "ok"
                if ok
                else f"BELOW {HONESTY_SHARE}x: the loop is slower than the reference, so the "
                "ratios are not trustworthy"
            )


# --------------------------------------------------------------------------- ablation ----
def run_ablation(
    args: argparse.Namespace, budget: Budget, on_update: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    device = torch.device(args.device)
    criteo = criteo_split(args.rows, args.max_cardinality)
    split = Split(criteo.feature_map, criteo.data, criteo.source, CRITEO_PARAMS["deepfm"])
    batch = args.ablation_batch
    out: dict[str, Any] = {
        "model": "deepfm",
        "batch_size": batch,
        "data": split.source,
        "variants": {},
    }
    if budget.left() >= args.min_left_s:
        out["loop"] = loop_run(split, "deepfm", batch, args.epochs, args.seed, device)
    for name, settings in ABLATION.items():
        if budget.left() < args.min_left_s:
            out["variants"][name] = {"settings": settings, "skipped": "time budget"}
            continue
        try:
            run = adrank_run(split, "deepfm", batch, args.epochs, args.seed, device, **settings)
        except Exception as exc:  # a setting that fails is a result too
            run = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        _free_device(device)
        out["variants"][name] = {"settings": settings, **run}
        print(f"ablation {name}: {run.get('samples_per_s', run.get('error'))}", flush=True)
        on_update(out)
    return out


# ------------------------------------------------------------------------------- main ----
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks gpu", description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=lambda s: s.split(","), default=list(CELLS))
    p.add_argument("--rows", type=int, default=8_000_000)
    p.add_argument("--max-cardinality", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--frappe", type=Path, default=DEFAULT_FRAPPE)
    p.add_argument("--export-frappe", type=Path, default=None, metavar="PATH")
    p.add_argument("--data-dir", default=os.environ.get("ADRANK_DATA_DIR"))
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--ablation", action="store_true")
    p.add_argument("--ablation-batch", type=int, default=65536)
    p.add_argument("--accuracy", action="store_true")
    p.add_argument("--accuracy-seeds", type=int, default=3)
    p.add_argument("--accuracy-epochs", type=int, default=100)
    p.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument(
        "--cpu-reference",
        type=Path,
        default=None,
        help="runs.jsonl with recorded CPU runs of deepfm on frappe (else train them)",
    )
    p.add_argument("--profile", action="store_true")
    p.add_argument("--profile-steps", type=int, default=20, help="steps timed, then profiled")
    p.add_argument(
        "--tuned-loop", action="store_true", help="also time the loop with TF32 + compile"
    )
    p.add_argument("--tuned-repeats", type=int, default=1)
    p.add_argument(
        "--session", action="store_true", help="cells, accuracy, tuned loop, profile, ablation"
    )
    p.add_argument("--budget-s", type=float, default=None)
    p.add_argument(
        "--cells-budget-s",
        type=float,
        default=None,
        help="start no cell run after this many seconds (the rest is for the other parts)",
    )
    p.add_argument(
        "--variants",
        type=lambda s: [v for v in s.split(",") if v],
        default=[],
        help=f"adrank settings to time beside its defaults in every cell: {sorted(VARIANTS)}",
    )
    p.add_argument(
        "--accuracy-variant",
        default="none",
        help="train the accuracy check's device side with a variant: none, auto or a name",
    )
    p.add_argument("--min-left-s", type=float, default=45.0, help="start no run with less left")
    args = p.parse_args(argv)
    unknown = sorted(set(args.cells) - set(CELLS))
    if unknown:
        p.error(f"unknown cell(s) {unknown}; choose from {sorted(CELLS)}")
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    if args.accuracy_variant not in ("none", "auto", *VARIANTS):
        p.error(f"--accuracy-variant: none, auto or one of {sorted(VARIANTS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.export_frappe is not None:
        print(json.dumps(export_frappe(args.export_frappe, args.data_dir)), flush=True)
        return
    device = torch.device(args.device)
    info = machine(device)
    budget = Budget(args.budget_s)
    plain = not (args.ablation or args.accuracy or args.profile)
    cells: dict[str, Any] = {}
    if plain or args.session:
        cells = _cells(args, budget.part(args.cells_budget_s), info)
    if args.profile or args.session:  # cheap (seconds), and says where a step's time goes
        _profile(args, budget)
    if args.accuracy or args.session:
        _accuracy(args, budget, info, accuracy_variant(args.accuracy_variant, cells, VARIANTS))
    if args.ablation or args.session:
        _ablation(args, budget, info)
    if cells and (args.tuned_loop or args.session):
        _tuned(args, budget, info, cells)
    print(f"results in {args.results_dir}", flush=True)


def _save_cells(args: argparse.Namespace, info: dict[str, Any], results: dict[str, Any]) -> None:
    """Write gpu.{json,md}; called after every run, so a killed session keeps them."""
    keys = ("rows", "max_cardinality", "repeats", "epochs", "seed", "tuned_repeats")
    config = {k: getattr(args, k) for k in keys}
    payload = {"machine": info, "config": config, "criteo_params": CRITEO_PARAMS}
    payload["cells"] = results
    write(args.results_dir, "gpu", payload, cells_markdown(results, info, args))


def _cells(args: argparse.Namespace, budget: Budget, info: dict[str, Any]) -> dict[str, Any]:
    results = run_cells(args, budget, lambda r: _save_cells(args, info, r))
    _save_cells(args, info, results)
    return results


def _tuned(
    args: argparse.Namespace, budget: Budget, info: dict[str, Any], results: dict[str, Any]
) -> None:
    run_tuned(args, budget, results, lambda r: _save_cells(args, info, r))
    _save_cells(args, info, results)


def _ablation(args: argparse.Namespace, budget: Budget, info: dict[str, Any]) -> None:
    if budget.left() < args.min_left_s:
        return

    def save(out: dict[str, Any]) -> None:
        write(args.results_dir, "gpu_ablation", {"machine": info, **out}, ablation_markdown(out))

    save(run_ablation(args, budget, save))


def _accuracy(
    args: argparse.Namespace,
    budget: Budget,
    info: dict[str, Any],
    variant: tuple[str, str] | None = None,
) -> None:
    if budget.left() < args.min_left_s:
        return
    out = run_accuracy(args, budget, VARIANTS, variant)
    write(args.results_dir, "gpu_accuracy", {"machine": info, **out}, accuracy_markdown(out))


def _profile(args: argparse.Namespace, budget: Budget) -> None:
    if budget.left() < args.min_left_s:
        return
    from adrank.utils import atomic_write_text
    from benchmarks.gpu_profile import run_profile

    args.results_dir.mkdir(parents=True, exist_ok=True)
    markdown = run_profile(args, {v: VARIANTS[v] for v in args.variants})
    atomic_write_text(args.results_dir / "gpu_profile.md", markdown)


if __name__ == "__main__":
    main()
