"""``adrank histories``: add behaviour-history columns to an event log
(:mod:`adrank.data.history_builder`, docs/sequences.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adrank.cli import app, console, fail
from adrank.utils import error_text


@app.command("histories")
def histories_cmd(
    input_path: Annotated[Path, typer.Argument(help="Event log (csv/tsv/parquet/jsonl).")],
    output: Annotated[Path, typer.Argument(help="Output file; its suffix picks the format.")],
    user: Annotated[str, typer.Option(help="Column of the user id.")],
    time: Annotated[str, typer.Option(help="Column of the event time (numbers or ISO-8601).")],
    column: Annotated[
        list[str],
        typer.Option(
            help="A column to collect, repeatable: the item id first, then attributes of the "
            "same event (aligned with it)."
        ),
    ],
    max_len: Annotated[int, typer.Option(min=1, help="Most recent events kept per row.")] = 50,
    positive: Annotated[
        str | None,
        typer.Option(help="A 0/1 column: only its events that are 1 enter the histories."),
    ] = None,
    prefix: Annotated[str, typer.Option(help="Name prefix of the history columns.")] = "hist_",
    delimiter: Annotated[str, typer.Option(help="Separator of the items.")] = "|",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")
    ] = False,
) -> None:
    """Add to each row of INPUT the same user's events strictly before its time (events at
    the same time are never in each other's history), oldest first; write OUTPUT and print
    the schema entries that declare the new columns."""
    import yaml

    from adrank.data.history_builder import HistoryError, add_histories
    from adrank.data.readers import DataFormatError, read_raw
    from adrank.serve.files import output_format
    from adrank.utils import WriteError, atomic_write

    try:
        fmt = output_format(output)
        if output.resolve() == input_path.resolve():
            raise ValueError(f"{output} is the input file; write the histories to a new file")
        if output.exists() and not overwrite:
            raise ValueError(f"{output} exists; pass --overwrite to replace it")
        frame = read_raw(input_path).frame
        out = add_histories(
            frame, user=user, time=time, columns=column, max_len=max_len,
            positive=positive, prefix=prefix, delimiter=delimiter,
        )  # fmt: skip

        def write(tmp: Path) -> None:
            if fmt == "parquet":
                out.write_parquet(tmp)
            elif fmt == "jsonl":
                out.write_ndjson(tmp)
            else:
                out.write_csv(tmp, separator="\t" if fmt == "tsv" else ",")

        atomic_write(output, write)
    except (HistoryError, DataFormatError, FileNotFoundError, ValueError, WriteError) as exc:
        fail(error_text(exc))
        return
    first = f"{prefix}{column[0]}"
    entries = [
        {"name": first, "type": "sequence", "max_len": max_len,
         "share_vocab_with": column[0], "target": column[0]},
        *({"name": f"{prefix}{c}", "type": "sequence", "max_len": max_len,
           "share_vocab_with": c, "aligned_with": first} for c in column[1:]),
    ]  # fmt: skip
    if delimiter != "|":
        for entry in entries:
            entry["delimiter"] = delimiter
    console.print(f"{out.height:,} rows with {len(column)} history column(s) -> {output}")
    console.print("Declare them in the schema's features (docs/sequences.md):")
    schema = yaml.safe_dump(entries, sort_keys=False, default_flow_style=None, width=1000)
    console.print(schema, end="", markup=False, highlight=False, soft_wrap=True)
