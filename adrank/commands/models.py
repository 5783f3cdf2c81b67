"""``adrank models``: the registered models and their families."""

from __future__ import annotations

from rich.table import Table

from adrank.cli import app, console


@app.command("models")
def models_cmd() -> None:
    """List the registered models."""
    from adrank.models import available_models, get_model_class
    from adrank.models.multitask import MultiTaskModel
    from adrank.models.sequence_base import SequenceModel

    table = Table(title="models")
    table.add_column("name")
    table.add_column("family")
    table.add_column("description")
    for name in available_models():
        cls = get_model_class(name)
        family = (
            "multi-task"
            if issubclass(cls, MultiTaskModel)
            else "sequence"
            if issubclass(cls, SequenceModel)
            else "feature interaction"
        )
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        table.add_row(name, family, " ".join(doc.split()))
    console.print(table)
