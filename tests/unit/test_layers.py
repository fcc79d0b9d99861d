"""The import table of architecture.md, enforced by walking each package's source with `ast`.

events/ imports nothing of ours and does no I/O, threads or clock reads; projections/ imports
only events; actors/ imports events and projections; nobody imports a bare `events`, `actors`
or `projections` (that would also change the stored event topics, style 3.3).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("events", "projections", "actors", "schedlog")

# Which of our packages each folder may import (architecture.md, "Layers and folders").
ALLOWED_OURS = {
    "events": ("schedlog.events",),
    "projections": ("schedlog.events", "schedlog.projections"),
    "actors": ("schedlog.events", "schedlog.projections", "schedlog.actors"),
    "schedlog": ("schedlog",),
}
# The pure domain: no clock reads, threads, I/O or actors (style 3.1).
FORBIDDEN_IN_EVENTS = (
    "time",
    "threading",
    "sqlite3",
    "pykka",
    "asyncio",
    "socket",
    "subprocess",
    "multiprocessing",
    "concurrent",
    "eventsourcing.application",
    "eventsourcing.persistence",
    "eventsourcing.sqlite",
    "eventsourcing.postgres",
    "schedlog.actors",
    "schedlog.projections",
)
BARE = ("events", "actors", "projections")


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str
    level: int = 0

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} imports {self.module!r}"


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _imports_in(source: str, path: Path) -> list[Import]:
    """Every import in one module's source, including those under TYPE_CHECKING."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend(Import(path, node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module == "__future__":
                continue
            found.append(Import(path, node.lineno, module, node.level))
            # `from schedlog import actors` imports schedlog.actors.
            found.extend(
                Import(path, node.lineno, f"{module}.{alias.name}", node.level)
                for alias in node.names
                if module and alias.name != "*"
            )
    return found


def _imports(folder: str) -> list[Import]:
    found: list[Import] = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        found.extend(_imports_in(path.read_text(encoding="utf-8"), path))
    return found


def _calls_named(folder: str, dotted: str) -> list[str]:
    """Attribute chains such as `datetime.now` / `time.time` used anywhere in a folder."""
    hits = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        hits.extend(
            f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and ast.unparse(node).endswith(dotted)
        )
    return hits


IMPORTS = {folder: _imports(folder) for folder in FOLDERS}


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_walker_sees_imports_in_every_folder(folder: str) -> None:
    # Guards against a vacuous pass (a wrong ROOT or an empty folder).
    assert (ROOT / folder / "__init__.py").is_file()
    assert IMPORTS[folder], f"no imports found in {folder}/"
    ours = [i for i in IMPORTS[folder] if _within(i.module, "schedlog")]
    assert ours, f"no imports of schedlog found in {folder}/"


def test_the_walker_sees_type_checking_imports() -> None:
    # projections/group_commit.py imports StoredEvent only under TYPE_CHECKING.
    assert any(i.module == "eventsourcing.persistence.StoredEvent" for i in IMPORTS["projections"])


@pytest.mark.parametrize("folder", FOLDERS)
def test_imports_are_absolute(folder: str) -> None:
    relative = [i.where() for i in IMPORTS[folder] if i.level > 0]
    assert relative == []


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_bare_import_of_a_layer_folder(folder: str) -> None:
    bare = [i.where() for i in IMPORTS[folder] if any(_within(i.module, b) for b in BARE)]
    assert bare == []


@pytest.mark.parametrize("folder", FOLDERS)
def test_each_layer_imports_only_what_the_table_allows(folder: str) -> None:
    allowed = ALLOWED_OURS[folder]
    wrong = [
        i.where()
        for i in IMPORTS[folder]
        if _within(i.module, "schedlog") and not any(_within(i.module, a) for a in allowed)
    ]
    assert wrong == []


def test_events_is_pure() -> None:
    wrong = [
        i.where()
        for i in IMPORTS["events"]
        if any(_within(i.module, f) for f in FORBIDDEN_IN_EVENTS)
    ]
    assert wrong == []


@pytest.mark.parametrize("chain", [".now", ".utcnow", ".today", "time.time", "time.monotonic"])
def test_events_never_reads_a_clock(chain: str) -> None:
    assert _calls_named("events", chain) == []


def test_the_walker_would_catch_each_kind_of_violation() -> None:
    source = (
        "import time\n"
        "from schedlog import actors\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    from events.function import ScheduledFunction\n"
    )
    found = _imports_in(source, ROOT / "events" / "fake.py")
    modules = {i.module for i in found}
    assert "time" in modules
    assert "schedlog.actors" in modules
    assert "events.function" in modules
    assert any(i.level == 1 for i in found)
    assert _within("schedlog.actors.timer", "schedlog.actors")
    assert not _within("schedlog.actorsx", "schedlog.actors")
    assert not _within("timezone", "time")
