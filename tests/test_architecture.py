"""The house: three layers with dependencies one way, no import circle, light imports at the bottom."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# lower rank = lower layer; an import may point to its own rank or lower
RANKS = {"corel._checks": 0, "corel._io": 0, "corel._native": 0, "corel.topology": 1, "corel.pershom": 1, "corel.detection": 2,
         "corel.experiments": 3, "corel": 4}
HEAVY = ("sklearn", "PIL", "lightning", "matplotlib", "triton")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "corel").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _rank(module: str) -> int:
    return next(rank for prefix, rank in sorted(RANKS.items(), key=lambda kv: -len(kv[0]))
                if module == prefix or module.startswith(prefix + "."))


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The corel modules ``path`` imports anywhere (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        out |= {name for name in names if name in modules}
    return out


def test_dependencies_point_down_and_never_in_a_circle():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in targets if _rank(b) > _rank(a)]
    assert not upward, f"imports from a lower layer up: {upward}"
    state: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError(f"import circle: {' -> '.join(path[path.index(nxt):] + [nxt])}")
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("module", ["corel", "corel.topology", "corel.pershom"])
def test_the_bottom_imports_nothing_heavy(module):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"import {module} loads {loaded}"


def test_public_names_stay_where_users_import_them():
    import corel
    import corel.pershom as pershom

    for name in corel.__all__:
        assert getattr(corel, name) is not None
    for name in ("vr_persistence_l1", "vr_persistence_l2", "vr_persistence", "h0_persistence"):
        assert callable(getattr(pershom, name))


def test_one_version_number():
    """corel.__version__ and the package metadata (pyproject.toml) say the same (they did not: 0.2.0 / 0.1.0)."""
    import re

    import corel

    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()  # no tomllib before Python 3.11
    assert re.search(r'^version = "([^"]+)"', text, re.M).group(1) == corel.__version__
