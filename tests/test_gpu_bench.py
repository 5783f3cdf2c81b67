"""``python -m benchmarks gpu`` on CPU with tiny sizes: the result files' structure (no
timing assertions), the frappe tensor file, and the options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adrank.data.batches import Batch, TensorData
from adrank.data.feature_map import FeatureMap, FieldInfo
from benchmarks import gpu
from benchmarks.gpu_accuracy import accuracy_variant
from benchmarks.gpu_data import _pack_split, load_frappe, save_frappe

FRAPPE_FIELDS = ("user", "item", "daytime", "weekday", "country")


@pytest.fixture(autouse=True)
def _restore_threads() -> None:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def fake_frappe(path: Path, rows: int = 300) -> FeatureMap:
    """A frappe-shaped tensor file (the fields the committed configs name, random ids)."""
    fm = FeatureMap(tuple(FieldInfo(n, "categorical", 20) for n in FRAPPE_FIELDS), ("label",))
    splits = {}
    for i, name in enumerate(("train", "valid", "test")):
        gen = torch.Generator().manual_seed(i)
        features = {n: torch.randint(2, 20, (rows,), generator=gen) for n in FRAPPE_FIELDS}
        labels = (torch.arange(rows) % 2).float()[:, None]
        splits[name] = _pack_split(Batch(features, labels))
    save_frappe(path, fm, splits)
    return fm


def tiny(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--rows", "300", "--max-cardinality", "40", "--repeats", "1", "--epochs", "2",
        "--device", "cpu", "--frappe", str(tmp_path / "frappe.pt"), "--cpu-threads", "1",
        "--results-dir", str(tmp_path / "results"), *extra,
    ]  # fmt: skip


def test_frappe_tensor_file_round_trips(tmp_path: Path) -> None:
    fm = fake_frappe(tmp_path / "frappe.pt")
    payload = torch.load(tmp_path / "frappe.pt", weights_only=True)
    assert payload["splits"]["train"]["features"]["user"].dtype == torch.int32  # half the bytes
    loaded_fm, splits = load_frappe(tmp_path / "frappe.pt")
    assert loaded_fm == fm
    assert set(splits) == {"train", "valid", "test"}
    assert isinstance(splits["train"], TensorData) and len(splits["train"]) == 300
    assert splits["train"].data.features["user"].dtype == torch.int64


def test_missing_frappe_file_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--export-frappe"):
        load_frappe(tmp_path / "none.pt")


def test_cells_write_results_naming_device_and_torch(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    fake_frappe(tmp_path / "frappe.pt")
    cells = "deepfm-8192,dcnv2-65536,finalmlp-frappe-4096"
    gpu.main(tiny(tmp_path, "--cells", cells))
    payload = json.loads((tmp_path / "results" / "gpu.json").read_text())
    assert payload["machine"]["torch"] == torch.__version__
    assert payload["machine"]["device"].startswith("CPU")
    assert payload["config"]["rows"] == 300 and payload["config"]["repeats"] == 1
    assert list(payload["cells"]) == cells.split(",")
    for name, cell in payload["cells"].items():
        assert len(cell["loop"]) == len(cell["adrank"]) == 1, name
        for side in ("loop", "adrank"):
            assert len(cell[side][0]["epoch_train_s"]) == 2
            assert cell[f"{side}_samples_per_s"] > 0
        assert cell["ratio"] == pytest.approx(
            cell["adrank_samples_per_s"] / cell["loop_samples_per_s"]
        )
    criteo = payload["cells"]["deepfm-8192"]
    assert criteo["data"].startswith("synthetic Criteo-shaped") and criteo["rows"] == 300
    assert criteo["honesty"].startswith("not an H200")
    assert payload["cells"]["finalmlp-frappe-4096"]["data"].startswith("frappe train split")
    markdown = (tmp_path / "results" / "gpu.md").read_text()
    assert "| cell | data | loop, samples/s | adrank, samples/s | adrank / loop |" in markdown
    assert all(f"| {name} |" in markdown for name in cells.split(","))
    assert f"PyTorch {torch.__version__}" in markdown


def test_ablation_accuracy_and_profile_modes(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    fake_frappe(tmp_path / "frappe.pt")
    argv = tiny(tmp_path, "--ablation", "--ablation-batch", "64", "--accuracy")
    gpu.main([*argv, "--accuracy-seeds", "2", "--accuracy-epochs", "1", "--profile",
              "--variants", "reduce-overhead", "--profile-steps", "2"])  # fmt: skip
    results = tmp_path / "results"
    assert not (results / "gpu.json").exists()  # modes alone do not run the cells
    ablation = json.loads((results / "gpu_ablation.json").read_text())
    assert ablation["batch_size"] == 64 and ablation["loop"]["samples_per_s"] > 0
    assert set(ablation["variants"]) == set(gpu.ABLATION)
    for name, variant in ablation["variants"].items():
        assert variant["samples_per_s"] > 0, (name, variant.get("error"))
    ablation_md = (results / "gpu_ablation.md").read_text()
    assert "| no tf32 |" in ablation_md and "| graphs inductor skipped |" in ablation_md
    assert "| no cuda_graph (the defaults of sessions 2-15) |" in ablation_md  # CPU: same speed
    accuracy = json.loads((results / "gpu_accuracy.json").read_text())
    assert [len(accuracy["devices"][side]["runs"]) for side in ("device", "cpu")] == [2, 2]
    assert isinstance(accuracy["within_2_pooled_std"], bool)
    assert "2 x pooled std" in (results / "gpu_accuracy.md").read_text()
    profile = (results / "gpu_profile.md").read_text()
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in profile.splitlines()
            if line.startswith("| adrank") or line.startswith("| loop")}  # fmt: skip
    assert set(rows) == {"adrank (defaults)", "adrank (reduce-overhead)", "loop"}
    assert all(float(cells[1]) > 0 for cells in rows.values())  # wall ms per step, measured
    assert "adrank (defaults), the profiled steps" in profile  # torch's table of operations


def test_accuracy_takes_the_cpu_side_from_recorded_runs(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    fake_frappe(tmp_path / "frappe.pt")
    runs = tmp_path / "runs.jsonl"
    rows = [{"model": "deepfm", "seed": s, "test_auc": a} for s, a in ((2021, 0.7), (2022, 0.8))]
    rows.append({"model": "dcnv2", "seed": 2021, "test_auc": 0.1})
    runs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = tiny(tmp_path, "--accuracy", "--accuracy-seeds", "2", "--accuracy-epochs", "1")
    gpu.main([*argv, "--cpu-reference", str(runs)])
    cpu = json.loads((tmp_path / "results" / "gpu_accuracy.json").read_text())["devices"]["cpu"]
    assert [r["test_auc"] for r in cpu["runs"]] == [0.7, 0.8]
    assert cpu["mean"] == pytest.approx(0.75) and cpu["source"].startswith("recorded in")
    with pytest.raises(ValueError, match="one deepfm row for each seed"):
        gpu.main([*argv, "--cpu-reference", str(runs), "--seed", "2022"])


def test_session_respects_the_time_budget(tmp_path: Path) -> None:
    gpu.main(tiny(tmp_path, "--session", "--cells", "deepfm-8192", "--budget-s", "0"))
    cell = json.loads((tmp_path / "results" / "gpu.json").read_text())["cells"]["deepfm-8192"]
    assert cell["adrank"] == [] and "time budget" in cell["skipped"]
    assert not (tmp_path / "results" / "gpu_ablation.json").exists()


def test_unknown_cell_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        gpu.parse_args(["--cells", "deepfm-1"])
    assert "unknown cell(s) ['deepfm-1']" in capsys.readouterr().err


def test_tuned_loop_adds_its_runs_and_ratio_to_the_cells(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    fake_frappe(tmp_path / "frappe.pt")
    gpu.main(tiny(tmp_path, "--cells", "deepfm-8192", "--tuned-loop"))
    cell = json.loads((tmp_path / "results" / "gpu.json").read_text())["cells"]["deepfm-8192"]
    assert len(cell["loop_tuned"]) == 1 and cell["loop_tuned"][0]["samples_per_s"] > 0
    assert cell["ratio_tuned"] == pytest.approx(
        cell["adrank_samples_per_s"] / cell["loop_tuned_samples_per_s"]
    )
    markdown = (tmp_path / "results" / "gpu.md").read_text()
    assert "| deepfm-8192 | 1 |" in markdown and "adrank / tuned loop" in markdown


def test_variants_are_timed_beside_the_defaults_in_every_cell(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    fake_frappe(tmp_path / "frappe.pt")
    gpu.main(tiny(tmp_path, "--cells", "deepfm-8192,dcnv2-65536", "--variants", "reduce-overhead"))
    cells = json.loads((tmp_path / "results" / "gpu.json").read_text())["cells"]
    for cell in cells.values():
        variant = cell["variants"]["reduce-overhead"]
        assert variant["settings"] == {"compile": "reduce-overhead", "cuda_graph": False}
        assert len(variant["runs"]) == 1 and variant["errors"] == []
        assert variant["runs"][0]["seed"] == cell["adrank"][0]["seed"]  # same seeds
        assert variant["ratio"] == pytest.approx(
            variant["samples_per_s"] / cell["loop_samples_per_s"]
        )
        assert variant["vs_defaults"] == pytest.approx(
            variant["samples_per_s"] / cell["adrank_samples_per_s"]
        )
    markdown = (tmp_path / "results" / "gpu.md").read_text()
    assert "adrank reduce-overhead, samples/s | reduce-overhead / loop |" in markdown
    assert "reduce-overhead = `{'compile': 'reduce-overhead', 'cuda_graph': False}`" in markdown


def _cells_with(gains: list[float | None], errors: bool = False) -> dict[str, dict]:
    return {
        f"c{i}": {"variants": {"reduce-overhead": {"vs_defaults": g, "errors": ["x"] * errors}}}
        for i, g in enumerate(gains)
    }


def test_accuracy_variant_auto_takes_a_variant_only_when_it_pays_everywhere_on_average() -> None:
    variants = gpu.VARIANTS
    assert accuracy_variant("none", _cells_with([2.0]), variants) is None
    assert accuracy_variant("reduce-overhead", {}, variants) == ("reduce-overhead", "asked for")
    chosen = accuracy_variant("auto", _cells_with([3.0, 0.98]), variants)
    assert chosen is not None and chosen[0] == "reduce-overhead" and "1.71x" in chosen[1]
    assert accuracy_variant("auto", _cells_with([1.2, 0.5]), variants) is None  # mean < 1
    assert accuracy_variant("auto", _cells_with([3.0], errors=True), variants) is None
    assert accuracy_variant("auto", _cells_with([3.0, None]), variants) is None
    assert accuracy_variant("auto", {}, variants) is None  # no cells ran


def test_cells_budget_leaves_time_for_the_accuracy_check(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    fake_frappe(tmp_path / "frappe.pt")
    argv = tiny(tmp_path, "--session", "--cells", "deepfm-8192", "--cells-budget-s", "0",
                "--accuracy-seeds", "2", "--accuracy-epochs", "1", "--budget-s", "600",
                "--min-left-s", "0.001", "--ablation-batch", "64",
                "--profile-steps", "2")  # fmt: skip
    gpu.main(argv)
    results = tmp_path / "results"
    cell = json.loads((results / "gpu.json").read_text())["cells"]["deepfm-8192"]
    assert cell["adrank"] == [] and "time budget" in cell["skipped"]
    accuracy = json.loads((results / "gpu_accuracy.json").read_text())
    assert accuracy["device_settings"] == {"variant": "defaults"}
    assert len(accuracy["devices"]["device"]["runs"]) == 2
    assert "Accelerator side: adrank's defaults." in (results / "gpu_accuracy.md").read_text()


def test_unknown_variant_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        gpu.parse_args(["--variants", "max-autotune"])
    assert "unknown variant(s) ['max-autotune']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu.parse_args(["--accuracy-variant", "fastest"])
