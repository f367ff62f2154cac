"""The layering rule of docs/architecture.md ("Parts and their arrows"), held
against the code: the table there is read, each module of ``sse_chat`` is
placed in exactly one part, and every import (read with ``ast``, imports inside
functions too) stays in its part or follows an arrow the table names. The
arrows themselves have no circle, so no import runs back up."""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from . import ROOT

PACKAGE = ROOT / "sse_chat"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
SECTION = "## Parts and their arrows"


def _parts() -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """From the table: each part's module paths (files, or folders ending in
    ``/``) and the parts it may import from."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| part ")]
    modules, arrows = {}, {}
    for row in rows:
        part, paths, imports = (cell.strip() for cell in row.strip("|").split("|"))
        modules[part] = re.findall(r"`([^`]+)`", paths)
        arrows[part] = set() if imports == "—" else {name.strip() for name in imports.split(",")}
    return modules, arrows


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path, names: set[str]) -> list[tuple[int, str]]:
    """``(line, module)`` for each import of a module in ``names`` that ``path``
    makes anywhere in its code (``from . import x`` of a submodule counts as ``x``)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            targets = [target] + [f"{target}.{alias.name}" for alias in node.names]
        else:
            continue
        known = set()
        for target in targets:
            # the longest known module the import names: sse_chat.models.registry, not sse_chat.models
            while target and target not in names:
                target = target.rpartition(".")[0]
            if target and target != module:
                known.add(target)
        found += [(node.lineno, target) for target in sorted(known)]
    return found


def _part_of(path: Path, modules: dict[str, list[str]]) -> list[str]:
    where = path.relative_to(ROOT).as_posix()
    return [part for part, paths in modules.items()
            if any(where == p or (p.endswith("/") and where.startswith(p)) for p in paths)]


def test_every_module_is_in_exactly_one_part():
    modules, _ = _parts()
    misplaced = {p.relative_to(ROOT).as_posix(): _part_of(p, modules) for p in sorted(PACKAGE.rglob("*.py"))}
    wrong = {path: parts for path, parts in misplaced.items() if len(parts) != 1}
    assert wrong == {}, ("each module belongs in exactly one row of the table in docs/architecture.md "
                         f"({SECTION!r}): add a new module to the row of its part")


def test_the_arrows_name_parts_of_the_table_and_have_no_circle():
    modules, arrows = _parts()
    assert set(modules) >= {"protocol", "event log", "backends", "streaming core", "HTTP surfaces", "app"}
    assert {part: named - set(modules) for part, named in arrows.items() if named - set(modules)} == {}
    try:
        list(TopologicalSorter(arrows).static_order())
    except CycleError as circle:
        pytest.fail(f"the arrows run in a circle: {circle.args[1]}")


def test_no_import_runs_up_a_layer():
    modules, arrows = _parts()
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    part = {name: _part_of(path, modules)[0] for name, path in paths.items() if len(_part_of(path, modules)) == 1}
    wrong = []
    for name, path in sorted(paths.items()):
        for line, target in _imported(path, set(paths)):
            if name in part and target in part and part[target] not in arrows[part[name]] | {part[name]}:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}: "
                             f"{part[name]} may not import from {part[target]}")
    assert wrong == [], ("an import the table in docs/architecture.md does not allow: import from below, "
                         "or, if the part truly needs the other, add the arrow there")
