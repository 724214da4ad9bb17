"""The method registry and the engine's boundaries, read from the source (no training):

- every registered method has its arm config class, and the config's arm union is exactly them;
- nash_core has no import cycle (module-level and function-level imports alike) and never
  imports Prefect or MLflow;
- no code outside nash_core/methods/ branches on a method's name;
- editing one method's module changes the code version of that method's cached steps only.
"""

from __future__ import annotations

import ast
import shutil
import typing
from pathlib import Path

import pytest

import nash_core
from nash_core.config import ARM_CLASSES, ArmConfig, arm_config
from nash_core.methods import METHODS, get_method
from tasks import cache
from tasks.prune import step_code

REPO = Path(__file__).resolve().parent.parent
CORE = Path(nash_core.__file__).parent


def test_every_method_is_registered_with_its_arm_config():
    assert set(METHODS) == {"nash", "sft", "cofi", "magnitude"}
    union = typing.get_args(typing.get_args(ArmConfig)[0])
    assert set(union) == set(ARM_CLASSES) == {m.config_class for m in METHODS.values()}
    for name, method in METHODS.items():
        assert method.name == name and method.module == f"nash_core.methods.{name}"
        assert (
            type(
                arm_config({"method": name, "decoder_layers": 2, "targets": [0.3]})
                if name in ("nash", "magnitude")
                else arm_config(
                    {"method": name, "decoder_layers": 2}
                    if name == "sft"
                    else {"method": name, "targets": [0.3]}
                )
            )
            is method.config_class
        )
    assert [m for m in METHODS.values() if m.depth_baseline] == [get_method("sft")]
    with pytest.raises(ValueError, match="unknown compression method 'prune-all'.*nash"):
        get_method("prune-all")


# --------------------------------------------------------------------------- imports
def _module_name(path: Path) -> str:
    rel = path.relative_to(CORE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """nash_core module -> the nash_core modules it imports (anywhere in it), and -> the
    top-level packages of everything it imports."""
    files = {_module_name(p): p for p in CORE.rglob("*.py")}
    edges, tops = {}, {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets, top = set(), set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                names = [node.module] + [s for s in subs if s in files]
            else:
                continue
            top |= {n.split(".")[0] for n in names}
            targets |= {n for n in names if n in files and n != "nash_core"}
        edges[name], tops[name] = targets - {name}, top
    return edges, tops


def _reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), list(edges.get(start, ()))
    while todo:
        v = todo.pop()
        if v not in seen:
            seen.add(v)
            todo += edges.get(v, ())
    return seen


def _cycles(edges: dict[str, set[str]]) -> list[str]:
    """The modules that can reach themselves through imports."""
    return sorted(v for v in edges if v in _reachable(edges, v))


def test_nash_core_has_no_import_cycle_and_no_prefect_or_mlflow():
    edges, tops = _import_graph()
    assert "nash_core.methods.magnitude" in edges and "nash_core.prune" in edges
    assert _cycles(edges) == []
    offenders = {m: sorted(t & {"prefect", "mlflow"}) for m, t in tops.items()}
    assert {m: t for m, t in offenders.items() if t} == {}
    # the checker sees what it must: a cycle through a function-level import is one
    fake = {
        **edges,
        "nash_core.methods.base": edges["nash_core.methods.base"] | {"nash_core.prune"},
    }
    assert "nash_core.prune" in _cycles(fake)


def test_no_method_name_branches_outside_the_registry():
    """``x.method == "nash"``-style comparisons belong to the method modules."""
    found = []
    for folder in ("nash_core", "tasks", "flows", "nash_mlflow", "nash_cli"):
        for path in (REPO / folder).rglob("*.py"):
            if "methods" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Compare):
                    continue
                sides = [node.left, *node.comparators]
                consts = {
                    c.value
                    for s in sides
                    for c in ([s] if not isinstance(s, ast.Tuple | ast.List | ast.Set) else s.elts)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                }
                named = any(isinstance(s, ast.Attribute) and s.attr == "method" for s in sides)
                if named and consts & set(METHODS):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == []


# --------------------------------------------------------------------------- cached steps
def test_editing_one_method_recomputes_only_its_own_steps(tmp_path):
    root = tmp_path / "nash_core"
    shutil.copytree(CORE, root, ignore=shutil.ignore_patterns("__pycache__"))

    def versions() -> dict[str, str]:
        cache.code_version.cache_clear()  # the files changed under the same names
        return {m: cache.code_version(*step_code(m), root=root) for m in METHODS}

    def edit(rel: str) -> None:
        with open(root / rel, "a", encoding="utf-8") as f:
            f.write("\n\ndef _an_edit():\n    return 1\n")

    before = versions()
    assert before == {m: cache.code_version(*step_code(m)) for m in METHODS}  # same code
    assert len(set(before.values())) == len(METHODS)
    changed = lambda now: {m for m in METHODS if now[m] != before[m]}  # noqa: E731

    edit("methods/magnitude.py")
    after = versions()
    assert changed(after) == {"magnitude"}
    before = after
    edit("methods/nash.py")
    assert changed(after := versions()) == {"nash"}
    before = after
    edit("methods/structured.py")  # shared by the structured methods
    assert changed(after := versions()) == {"nash", "cofi", "sft"}
    before = after
    edit("prune.py")  # the one stage runner
    assert changed(versions()) == set(METHODS)
