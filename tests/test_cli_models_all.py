"""``adrank benchmark --models all`` picks the models a dataset can train."""

from __future__ import annotations

from adrank.cli import models_for_dataset
from adrank.models import available_models, get_model_class
from adrank.models.multitask import MultiTaskModel


def test_all_models_leave_out_multi_task_models_on_single_task_data() -> None:
    multi = {m for m in available_models() if issubclass(get_model_class(m), MultiTaskModel)}
    assert {"esmm", "mmoe", "ple", "aitm", "sharebottom"} <= multi
    assert not multi & set(models_for_dataset("frappe"))
    assert multi <= set(models_for_dataset("frappe_funnel"))
    assert "deepfm" in models_for_dataset("frappe")


def test_all_models_leave_out_sequence_models_without_a_history() -> None:
    from adrank.models.sequence_base import SequenceModel

    sequence = {m for m in available_models() if issubclass(get_model_class(m), SequenceModel)}
    assert {"din", "dien", "bst", "sdim"} <= sequence
    assert not sequence & set(models_for_dataset("frappe"))
    # DACA, a cross-domain sequence model, also needs the domain role
    assert sequence - {"daca"} <= set(models_for_dataset("movielens_100k"))
    assert "daca" in models_for_dataset("movielens_100k_cross")


def test_all_models_leave_out_multi_domain_models_without_a_domain_role() -> None:
    """The README's 19-model Frappe board is `--models all`; STAR and PEPNet refuse a schema
    without a domain role and AdaptDHM has no domains to route, so none of them is in it."""
    domain = {m for m in available_models() if getattr(get_model_class(m), "multi_domain", False)}
    assert {"star", "pepnet", "adaptdhm", "daca"} <= domain
    frappe = models_for_dataset("frappe")
    assert not domain & set(frappe) and len(frappe) == 19
    assert {"star", "pepnet", "adaptdhm"} <= set(models_for_dataset("frappe_domains"))


def test_models_command_lists_every_model_with_its_family() -> None:
    from typer.testing import CliRunner

    from adrank.cli import app

    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert set(available_models()) <= set(rows)
    assert "multi-task" in rows["esmm"] and "sequence" in rows["din"]
    assert "feature interaction" in rows["deepfm"]
