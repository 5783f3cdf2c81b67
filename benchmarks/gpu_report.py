"""Result files of ``python -m benchmarks gpu``: machine info and the markdown tables."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch


def device_name(device: torch.device) -> str:
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def machine(device: torch.device) -> dict[str, Any]:
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def cells_markdown(results: dict[str, Any], info: dict[str, Any], args: argparse.Namespace) -> str:
    def num(x: float | None, fmt: str = ",.0f") -> str:
        return "-" if x is None else format(x, fmt)

    lines = [
        f"# GPU training: adrank vs a hand-written loop ({info['device']})",
        "",
        f"PyTorch {info['torch']} (CUDA {info['cuda']}), Python {info['python']}, "
        f"{info['timestamp']}. Median of {args.repeats} runs per cell, each {args.epochs} epochs "
        "with epoch 1 as warm-up; "
        "samples/s over training steps only. Same network on both sides (the adrank model "
        "module); see benchmarks/gpu.py for the two loops. Criteo cells are synthetic data.",
        "",
    ]
    variants = list(dict.fromkeys(v for r in results.values() for v in r.get("variants", {})))
    head = "| cell | data | loop, samples/s | adrank, samples/s | adrank / loop |"
    head += "".join(f" adrank {v}, samples/s | {v} / loop |" for v in variants)
    lines += [head + " honesty check |", "|---" * (6 + 2 * len(variants)) + "|"]
    notes = []
    for name, r in results.items():
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.2f}"
        note = r.get("honesty", "") + (f" ({r['skipped']})" if r.get("skipped") else "")
        row = (
            f"| {name} | {r['data']} | {num(r.get('loop_samples_per_s'))} | "
            f"{num(r.get('adrank_samples_per_s'))} | {ratio} |"
        )
        for v in variants:
            got = r.get("variants", {}).get(v, {})
            row += f" {num(got.get('samples_per_s'))} | {num(got.get('ratio'), '.2f')} |"
            for run in got.get("runs", []):
                if run.get("error"):
                    notes.append(f"{name}, {v}, seed {run['seed']}: {run['error']}")
                elif run.get("cudagraph_skips"):
                    notes.append(
                        f"{name}, {v}, seed {run['seed']}: inductor skipped CUDA graphs for "
                        f"{run['cudagraph_skips']} compiled graph(s)"
                    )
        lines.append(row + f" {note} |")
    if variants:
        lines += [
            "",
            "Variants: adrank with these settings instead of its defaults, same runs and "
            "seeds: " + "; ".join(f"{v} = `{results_settings(results, v)}`" for v in variants),
        ]
    lines += [f"* {n}" for n in notes] if not notes else ["", *[f"* {n}" for n in notes]]
    tuned = {n: r for n, r in results.items() if r.get("loop_tuned")}
    if tuned:
        lines += [
            "",
            "The loop tuned like adrank's CUDA defaults (on CUDA: TF32 matmuls, the forward "
            "`torch.compile`d; median of the runs shown, seeds from the first):",
            "",
            "| cell | runs | tuned loop, samples/s | adrank, samples/s | adrank / tuned loop |",
            "|---|---|---|---|---|",
        ]
        for name, r in tuned.items():
            ratio = "-" if r.get("ratio_tuned") is None else f"{r['ratio_tuned']:.2f}"
            lines.append(
                f"| {name} | {len(r['loop_tuned'])} | {num(r.get('loop_tuned_samples_per_s'))} | "
                f"{num(r.get('adrank_samples_per_s'))} | {ratio} |"
            )
    return "\n".join(lines) + "\n"


def results_settings(results: dict[str, Any], variant: str) -> dict[str, Any]:
    for r in results.values():
        if variant in r.get("variants", {}):
            return r["variants"][variant]["settings"]
    return {}


def ablation_markdown(out: dict[str, Any]) -> str:
    loop = out.get("loop", {}).get("samples_per_s")
    lines = [
        f"# adrank GPU settings, one at a time: DeepFM, batch {out['batch_size']}",
        "",
        f"Data: {out['data']}. One run each (epoch 1 warm-up). Loop: "
        f"{'-' if loop is None else format(loop, ',.0f')} samples/s.",
        "",
        "| setting | adrank, samples/s | / loop | train loss (last epoch) | graphs inductor "
        "skipped |",
        "|---|---|---|---|---|",
    ]
    for name, v in out["variants"].items():
        rate = v.get("samples_per_s")
        cell = f"{rate:,.0f}" if rate else v.get("error", v.get("skipped", "-"))
        ratio = f"{rate / loop:.2f}" if rate and loop else "-"
        loss = f"{v['train_loss'][-1]:.5f}" if v.get("train_loss") else "-"
        lines.append(f"| {name} | {cell} | {ratio} | {loss} | {v.get('cudagraph_skips', '-')} |")
    return "\n".join(lines) + "\n"


def accuracy_markdown(out: dict[str, Any]) -> str:
    lines = [
        "# DeepFM on frappe: accelerator vs CPU test AUC",
        "",
        "Accelerator side: adrank's "
        + _settings_text(out.get("device_settings", {"variant": "defaults"})),
        "",
        "| device | seeds | mean test AUC | std | source |",
        "|---|---|---|---|---|",
    ]
    for d in out["devices"].values():
        device = d["device"]
        mean = "-" if d["mean"] is None else f"{d['mean']:.5f}"
        std = "-" if d["std"] is None else f"{d['std']:.5f}"
        source = d.get("source", "trained here")
        lines.append(f"| {device} | {len(d['runs'])} | {mean} | {std} | {source} |")
    if "delta_mean_auc" in out:
        verdict = "within" if out["within_2_pooled_std"] else "OUTSIDE"
        lines += [
            "",
            f"|delta mean AUC| = {abs(out['delta_mean_auc']):.5f}, 2 x pooled std = "
            f"{2 * out['pooled_std']:.5f}: {verdict}.",
        ]
    return "\n".join(lines) + "\n"


def _settings_text(settings: dict[str, Any]) -> str:
    if settings.get("variant", "defaults") == "defaults":
        return "defaults."
    extra = {k: v for k, v in settings.items() if k not in ("variant", "why")}
    return f"defaults with {extra} (variant {settings['variant']}: {settings.get('why', '')})."


def write(results_dir: Path, name: str, payload: dict[str, Any], markdown: str) -> None:
    from adrank.utils import atomic_write_text  # temp file renamed into place

    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results_dir / f"{name}.json", json.dumps(payload, indent=2, default=str))
    atomic_write_text(results_dir / f"{name}.md", markdown)
