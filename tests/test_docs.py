"""The user guide's code blocks run, and its generated tables match the code.

Conventions (also at the top of docs/README.md): every ```python block of a ``docs/*.md``
page runs, in page order, in one namespace per page, in a fresh temporary directory;
```bash test blocks run there with bash and the virtual environment's ``adrank``;
```python no-run blocks are shown only; other fences are shown only. Tables between
``<!-- generated:NAME -->`` and ``<!-- end:NAME -->`` must equal what :data:`GENERATORS`
makes; ``python tests/test_docs.py --write`` rewrites them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from adrank.models import registry

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))
#: flags a fence's info string may carry, per language
FLAGS = {"python": {"no-run"}, "bash": {"test"}}
FENCE = re.compile(r"^(?P<indent> {0,3})```(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    language: str
    flags: frozenset[str]
    code: str

    @property
    def runs(self) -> bool:
        if self.language == "python":
            return "no-run" not in self.flags
        return self.language == "bash" and "test" in self.flags


def code_blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown page, with its language and flags."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        words = match["info"].split()
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"{path.name}:{start + 1}: the code block is never closed")
        language = words[0] if words else ""
        blocks.append(
            Block(path.name, start + 1, language, frozenset(words[1:]), "\n".join(body) + "\n")
        )
        i += 1
    return blocks


def test_fence_flags_are_known() -> None:
    """A typo in a flag (``norun``) must not silently turn a block into a shown one."""
    for page in PAGES:
        for block in code_blocks(page):
            allowed = FLAGS.get(block.language, set())
            unknown = sorted(block.flags - allowed)
            assert not unknown, (
                f"{block.page}:{block.line}: unknown flag(s) {unknown} on a {block.language!r} "
                f"block; allowed: {sorted(allowed) or 'none'} (see docs/README.md)"
            )


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def _forget_modules_under(folder: Path) -> None:
    """Drop the modules a page imported from its temporary folder (``my_models``)."""
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(folder.resolve()):
            del sys.modules[name]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_code_blocks_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    blocks = [b for b in code_blocks(page) if b.runs]
    if not blocks:
        pytest.skip(f"{page.name} has no runnable code blocks")
    monkeypatch.chdir(tmp_path)
    # a page may register a model of its own (python_api.md) and import its module from
    # the temporary folder: both stay with the page, not with the tests that follow
    registry.available_models()  # adrank's own models first, then a copy the page may add to
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(sys, "path", list(sys.path))
    request.addfinalizer(lambda: _forget_modules_under(tmp_path))
    monkeypatch.setenv("ADRANK_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    env = os.environ | {"PATH": f"{_venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}"}
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for block in blocks:
        where = f"{block.page}:{block.line}"
        if block.language == "python":
            try:
                # the point of this test: the page's own code, as a reader would run it
                exec(compile(block.code, where, "exec"), namespace)
            except Exception as exc:
                pytest.fail(f"the python block at {where} failed: {type(exc).__name__}: {exc}")
        else:
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block.code],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, (
                f"the bash block at {where} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )


# ---------------------------------------------------------------- generated tables ----
def roles_table() -> str:
    """The role table of docs/schema.md, from :data:`adrank.data.schema.ROLES`."""
    from adrank.data.schema import ROLES

    lines = [
        "| role | kind | several columns | allowed values | meaning |",
        "|---|---|---|---|---|",
    ]
    for spec in ROLES.values():
        allowed = "any" if spec.bounds is None else f"({spec.bounds[0]:g}, {spec.bounds[1]:g}]"
        several = "yes" if spec.multi else "no"
        lines.append(
            f"| `{spec.name}` | {spec.kind} | {several} | {allowed} | {spec.description} |"
        )
    return "\n".join(lines)


def _funnel_feature_map():
    import polars as pl

    from adrank.data.processor import FeatureProcessor
    from adrank.data.schema import Schema

    schema = Schema.from_dict(
        {
            "tasks": [{"name": "click", "label": "click"}, {"name": "buy", "label": "buy",
                                                          "given": "click"}],
            "features": [{"name": "user", "type": "categorical"},
                         {"name": "item", "type": "categorical"}],
        }
    )  # fmt: skip
    frame = pl.DataFrame({"click": [0, 1, 1], "buy": [0, 0, 1], "user": list("abc"),
                          "item": list("xyz")})  # fmt: skip
    return FeatureProcessor(schema).fit(frame).feature_map()


def _reference(cls: type) -> str:
    """The paper a model follows: the head of its module docstring up to the end of its
    first parenthesis (``DeepFM (Guo et al., "...", IJCAI 2017)``), or its first sentence."""
    doc = " ".join((sys.modules[cls.__module__].__doc__ or "").split("\n\n")[0].split())
    paren, colon = doc.find("("), doc.find(":")
    text = re.split(r"\.(\s|$)", doc)[0]
    if paren >= 0 and (colon < 0 or paren < colon):
        depth = 0
        for i, char in enumerate(doc):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if char == ")" and depth == 0:
                text = doc[: i + 1]
                break
    return text.replace("|", "\\|")


def models_table() -> str:
    """The model table of docs/models.md, from the registry: every registered model with
    the outputs it emits on a click/conversion dataset (default hyperparameters)."""
    from adrank.models.registry import available_models, build_model, get_model_class

    feature_map = _funnel_feature_map()
    lines = [
        "| model | kind | outputs (click/conversion data) | trained through | reference |",
        "|---|---|---|---|---|",
    ]
    for name in available_models():
        cls = get_model_class(name)
        outputs, trained = cls.outputs, cls.trained_outputs
        if outputs is None:
            try:
                model = build_model(name, feature_map, default_init=False)
                outputs, trained = model.outputs, model.trained_outputs
            except Exception:
                outputs = None
        if outputs is None:
            kind, shown, through = "single-task", "one logit: the task set by `task=`", "–"
            if cls.multi_domain:  # see docs/multidomain.md
                kind += ", multi-domain" + (" (domain role)" if cls.required_roles else "")
        else:
            kind, shown = "multi-task", ", ".join(f"`{o}`" for o in outputs)
            through = ", ".join(f"`{o}`" for o in (trained or outputs))
        lines.append(f"| `{name}` | {kind} | {shown} | {through} | {_reference(cls)} |")
    return "\n".join(lines)


GENERATORS: dict[str, tuple[str, Callable[[], str]]] = {
    "roles": ("schema.md", roles_table),
    "models": ("models.md", models_table),
}


def _section(text: str, name: str) -> re.Match[str] | None:
    return re.search(
        rf"(<!-- generated:{name} -->\n)(.*?)\n?(<!-- end:{name} -->)", text, flags=re.DOTALL
    )


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generated_tables_match_the_code(name: str) -> None:
    page, make = GENERATORS[name]
    text = (DOCS / page).read_text()
    found = _section(text, name)
    assert found is not None, f"docs/{page} lacks the <!-- generated:{name} --> section"
    assert found.group(2) == make(), (
        f"the {name} table in docs/{page} is stale: run `python tests/test_docs.py --write`"
    )


def test_schema_reference_names_every_key() -> None:
    """Every key a schema accepts is documented in docs/schema.md."""
    from adrank.data import schema as schema_module
    from adrank.data.transforms import TRANSFORMS

    text = (DOCS / "schema.md").read_text()
    keys = {"name", "tasks", "roles", "features", "transforms", "labels", "group", "time"}
    for cls in (schema_module.Task, *schema_module._FEATURE_TYPES.values(), *TRANSFORMS.values()):
        keys |= {f.name for f in dataclasses.fields(cls)}
    keys |= set(TRANSFORMS) | set(schema_module._FEATURE_TYPES) | set(schema_module.NORMALIZERS)
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, f"docs/schema.md does not mention {missing}"


def write_generated() -> None:
    for name, (page, make) in GENERATORS.items():
        path = DOCS / page
        text = path.read_text()
        found = _section(text, name)
        if found is None:
            raise SystemExit(f"docs/{page} lacks the <!-- generated:{name} --> section")
        path.write_text(text[: found.start(2)] + make() + "\n" + text[found.start(3) :])
        print(f"wrote the {name} table of docs/{page}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tests/test_docs.py --write")
    write_generated()
