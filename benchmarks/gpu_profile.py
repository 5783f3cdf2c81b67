"""Where a training step's time goes, adrank against the hand-written loop (``python -m
benchmarks gpu --profile``; issue 18).

For each side (adrank with its defaults, adrank with each ``--variants`` setting, the loop)
on DeepFM with the synthetic Criteo-shaped data at ``--ablation-batch``:

* **wall ms/step**: ``--profile-steps`` steps (20) timed between two device syncs, after
  ``WARMUP`` steps (compilation and CUDA-graph recording happen there);
* then as many more steps under ``torch.profiler``: the device's kernel time per step,
  kernel launches and CUDA-graph launches per step (the host's work per step), host syncs,
  ``aten::item`` calls and device-to-host copies.

Wall time well above the kernel time means the host bounds the step (launches, Python);
close to it, the GPU does. adrank runs a real ``Trainer.fit`` (its loader, TF32 setting and
compiled forward) with a callback that opens the two windows, so nothing is left out.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from adrank.config import TrainConfig
from adrank.data.batches import InMemoryLoader, TensorData, _slice
from adrank.models.registry import build_model
from adrank.train.callbacks import Callback
from adrank.train.trainer import Trainer
from adrank.utils import seed_everything
from benchmarks.gpu import CRITEO_PARAMS, LEARNING_RATE, LoopSide, _free_device, _sync
from benchmarks.gpu_data import Split, criteo_split
from benchmarks.gpu_report import device_name

WARMUP = 10  # steps before the timed window: compilation and CUDA-graph recording
LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
COUNTED = (*SYNCS, "aten::item", "aten::_local_scalar_dense", "Memcpy DtoH", "cudaMemcpyAsync")


class _Windows:
    """Steps ``WARMUP+1 .. WARMUP+steps`` timed, the next ``steps`` profiled; ``step()``
    is called after every training step."""

    def __init__(self, device: torch.device, steps: int) -> None:
        self.device = device
        self.steps = steps
        self.done = 0
        self.start = 0.0
        self.wall_ms: float | None = None
        self.prof: Any = None

    def step(self) -> None:
        self.done += 1
        if self.done == WARMUP:
            _sync(self.device)
            self.start = time.perf_counter()
        elif self.done == WARMUP + self.steps:
            _sync(self.device)
            self.wall_ms = (time.perf_counter() - self.start) * 1e3 / self.steps
            self.prof = torch.profiler.profile(activities=_activities(self.device))
            self.prof.__enter__()
        elif self.done == WARMUP + 2 * self.steps:
            _sync(self.device)
            self.prof.__exit__(None, None, None)


class _AdrankWindows(Callback):
    def __init__(self, windows: _Windows) -> None:
        self.windows = windows

    def on_batch_end(self, trainer: Trainer, step: int, batch_size: int) -> None:
        self.windows.step()


def _activities(device: torch.device) -> list[Any]:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    return acts


def profile_adrank(
    split: Split, batch: int, device: torch.device, steps: int, **settings: Any
) -> _Windows:
    seed_everything(0)
    net = build_model("deepfm", split.feature_map, **split.params)
    config = TrainConfig(
        device=str(device), batch_size=batch, max_epochs=1, progress=False, **settings
    )
    windows = _Windows(device, steps)
    trainer = Trainer(net, config, callbacks=[_AdrankWindows(windows)])
    trainer.fit(InMemoryLoader(split.data, batch, shuffle=True))
    return windows


def profile_loop(split: Split, batch: int, device: torch.device, steps: int) -> _Windows:
    seed_everything(0)
    net = build_model("deepfm", split.feature_map, **split.params).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, fused=True)
    side = LoopSide(net, net, optimizer, split, device)
    perm = torch.randperm(len(side.labels), device=device)
    windows = _Windows(device, steps)
    net.train()
    for first in range(0, len(perm) - batch + 1, batch):
        side.step(perm[first : first + batch])
        windows.step()
    return windows


def summarize(windows: _Windows) -> dict[str, Any]:
    """Per-step numbers of the profiled window."""
    if windows.prof is None:
        return {"wall_ms_per_step": windows.wall_ms, "kernel_ms_per_step": 0.0,
                "launches_per_step": 0.0, "graph_launches_per_step": 0.0,
                "counts": dict.fromkeys(COUNTED, 0)}  # fmt: skip
    steps = windows.steps
    counts = dict.fromkeys(COUNTED, 0)
    launches = graphs = 0
    for e in windows.prof.events():
        launches += e.name in LAUNCHES  # exact names: one is a prefix of another
        graphs += e.name == "cudaGraphLaunch"
        for n in counts:
            if n in e.name:
                counts[n] += 1
    kernel_us = 0.0  # as torch's table sums "Self CUDA time total"
    for e in windows.prof.key_averages():
        if e.device_type == torch.autograd.DeviceType.CUDA and not getattr(
            e, "is_user_annotation", False
        ):
            kernel_us += e.self_device_time_total
    return {
        "wall_ms_per_step": windows.wall_ms,
        "kernel_ms_per_step": kernel_us / 1e3 / steps,
        "launches_per_step": launches / steps,
        "graph_launches_per_step": graphs / steps,
        "counts": counts,
    }


def run_profile(args: argparse.Namespace, variants: dict[str, dict[str, Any]]) -> str:
    """The markdown of ``gpu_profile.md``: one row per side, then adrank's top operations."""
    device = torch.device(args.device)
    batch, steps = args.ablation_batch, args.profile_steps
    rows = (WARMUP + 2 * steps + 1) * batch  # full batches only
    criteo = criteo_split(max(args.rows, rows), args.max_cardinality)  # the cells' if it is
    data = criteo.data
    if len(data) > rows:
        data = TensorData(_slice(data.data, 0, rows))
    split = Split(criteo.feature_map, data, criteo.source, CRITEO_PARAMS["deepfm"])
    sides: dict[str, Callable[[], _Windows]] = {
        "adrank (defaults)": lambda: profile_adrank(split, batch, device, steps)
    }
    for name, settings in variants.items():
        sides[f"adrank ({name})"] = lambda s=settings: profile_adrank(
            split, batch, device, steps, **s
        )
    sides["loop"] = lambda: profile_loop(split, batch, device, steps)
    lines = [
        f"# Training step profile ({device_name(device)}, torch {torch.__version__})",
        "",
        f"DeepFM, batch {batch}, synthetic Criteo-shaped data; {steps} steps timed after "
        f"{WARMUP} warm-up steps, then {steps} more profiled. Per step:",
        "",
        "| side | wall ms | GPU kernel ms | kernel launches | graph launches | host syncs | "
        "item() | DtoH copies |",
        "|---|---|---|---|---|---|---|---|",
    ]
    detail = ""
    for name, run in sides.items():
        try:
            windows = run()
        except Exception as exc:  # a side that fails is a result too
            lines.append(f"| {name} | {type(exc).__name__}: {str(exc)[:200]} | | | | | | |")
            continue
        s = summarize(windows)
        c = s["counts"]
        wall = "-" if s["wall_ms_per_step"] is None else f"{s['wall_ms_per_step']:.3f}"
        lines.append(
            f"| {name} | {wall} | {s['kernel_ms_per_step']:.3f} | {s['launches_per_step']:.1f} "
            f"| {s['graph_launches_per_step']:.1f} | {sum(c[n] for n in SYNCS) / steps:.2f} "
            f"| {c['aten::item'] / steps:.2f} | {c['Memcpy DtoH'] / steps:.2f} |"
        )
        if name == "adrank (defaults)" and windows.prof is not None:
            sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
            table = windows.prof.key_averages().table(sort_by=sort, row_limit=25)
            detail = f"\nadrank (defaults), the profiled steps:\n\n```\n{table}\n```\n"
        _free_device(device)
    return "\n".join(lines) + "\n" + detail
