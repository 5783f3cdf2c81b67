"""``adrank models``: the registered models and their families."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

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
        if issubclass(cls, MultiTaskModel):
            family = "multi-task"
        elif getattr(cls, "multi_domain", False):
            family = "multi-domain"
        elif issubclass(cls, SequenceModel):
            family = "sequence"
        else:
            family = "feature interaction"
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        # Text: a docstring's brackets ([B, F, D], ``[...]``) are not rich markup
        table.add_row(name, family, Text(" ".join(doc.split())))
    console.print(table)
