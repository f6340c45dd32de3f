"""The layout registry (bridge/timelapse/layouts.py): one row per layout, no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from bridge.cli import main
from bridge.timelapse import layouts
from bridge.timelapse.style import label
from replay_recordings import synthetic_recording

TIMELAPSE = Path(layouts.__file__).parent


def local_imports(path: Path) -> set[str]:
    """The sibling modules a timelapse module imports (``from .x import``, ``from . import x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
    return found & {p.stem for p in TIMELAPSE.glob("*.py")}


def test_timelapse_modules_import_each_other_without_a_cycle():
    graph = {p.stem: local_imports(p) for p in TIMELAPSE.glob("*.py") if p.stem != "__init__"}
    done, active = set(), []

    def visit(name):
        assert name not in active, f"import cycle: {' -> '.join(active + [name])}"
        if name in done:
            return
        active.append(name)
        for dep in graph.get(name, ()):
            visit(dep)
        active.pop()
        done.add(name)

    for name in graph:
        visit(name)


class Plain:
    """A made-up layout: the preview alone, labelled."""

    def __init__(self, start, style):
        self.style = style

    def render(self, frame):
        return label(np.ascontiguousarray(frame.preview), self.style.words[0][1])


def test_a_new_layout_is_one_row_and_the_cli_takes_it(tmp_path, monkeypatch):
    monkeypatch.setitem(layouts.LAYOUTS, "plain", layouts.Layout("plain", Plain, "strongest", "step", "the preview alone"))
    run = synthetic_recording(tmp_path / "run", steps=3)
    out = tmp_path / "plain.gif"
    assert main(["timelapse", str(run), "-o", str(out), "--layout", "plain", "--fps", "5", "--hold", "0",
                 "--no-caption", "--no-timeline", "--no-progress"]) == 0
    assert out.stat().st_size > 0
