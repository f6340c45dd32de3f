"""docs/ARCHITECTURE.md stays true: every module of the package is named there, by its own path
or by its package's folder, so a newcomer finds the room for any change in one look."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_is_on_the_map():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = []
    for path in sorted((ROOT / "bridge").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if path.name == "__init__.py" and path.parent.name != "sinks":
            continue
        folders = [p.relative_to(ROOT).as_posix() + "/" for p in path.parents if p != ROOT and p.is_relative_to(ROOT / "bridge") and p != ROOT / "bridge"]
        if f"`{rel}`" not in doc and not any(f"`{f}`" in doc for f in folders) and f"`{path.stem}`" not in doc:
            missing.append(rel)
    assert not missing, f"modules not in docs/ARCHITECTURE.md: {missing}"
