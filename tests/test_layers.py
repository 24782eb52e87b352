"""The package's imports flow one way: each module imports only its own layer or the layers below.

The layers, lowest first (a module's layer is its first name under ``vertgrade``: ``io/nifti.py``
is in ``io``). Every import counts, at module level, in a function body or under
``TYPE_CHECKING``: a cycle hidden in a function is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vertgrade"

#: Lowest first. The core pipeline, then the outputs, then the tools and the learned add-on.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("_version", "_build_version", "errors", "_parallel"),  # nothing of vertgrade
    ("levels", "config"),  # the label table; every method constant and parameter
    ("study",),  # Volume, Study: what every stage passes on
    ("io",),  # reading, validating, reorienting; atomic writes; the grades reader
    ("geometry",),  # frames, sampling, vertebra location, body isolation, thirds
    ("morphometry",),  # height maps, regional heights, endplate planes
    ("qc",),  # the QC flags and their checks
    ("reference",),  # the healthy-reference interface and the neighbour estimator
    ("alignment",),  # endplate-angle maths
    ("grading",),  # RHLV, Genant grade, type, confidence of one vertebra
    ("result",),  # VertebraResult, SpineResult
    ("pipeline",),  # grade_study: the core, in order
    ("report",),  # result files, schema, figures, HTML, PDF, DICOM
    ("phantom",),  # synthetic spines with known truth
    ("evaluation",),  # metrics against expert grades
    ("segqa",),  # segmentation QA: the VerSe benchmark's metrics for a user's labels
    ("synthesis",),  # the learned add-on: generator, SynthesisReference, SVM grader
    ("segment",),  # labels from a CT alone: the segmenter step (TotalSegmentator)
    ("workflow",),  # load -> grade -> grader -> write -> report -> DICOM
    ("compare",),  # follow-up: incident fractures between two graded studies
    ("cohort",),  # many studies on Dask
    ("__init__",),  # the public API
    ("cli", "__main__"),  # the command line
)
_RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every vertgrade module ``name`` imports (a ``from X import Y`` of a submodule counts Y)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
            names: list[str] = []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            targets = [mod]
            names = [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in [*targets, *names]:
            if t in known:
                out.add(t)
    out.discard(name)
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def test_every_module_has_a_layer() -> None:
    missing = sorted({_layer(m) for m in _modules()} - set(_RANK))
    assert not missing, f"modules outside LAYERS (add them to a layer): {missing}"


def test_no_import_runs_up_a_layer() -> None:
    upward = []
    for mod, deps in _graph().items():
        for dep in sorted(deps):
            if _RANK.get(_layer(dep), -1) > _RANK.get(_layer(mod), -1):
                # a package's __init__ importing its own submodules is not upward
                if not dep.startswith(mod + "."):
                    upward.append(f"{mod} -> {dep}")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            # a submodule importing its own package's __init__ is resolved by Python in order
            if node.startswith(dep + "."):
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
    ],
)
def test_cycle_finder(graph: dict[str, set[str]], expected: list[str] | None) -> None:
    assert _cycle(graph) == expected


def test_imports_are_resolved(tmp_path: Path) -> None:
    """The import reader sees relative, in-function and submodule imports."""
    src = (
        "from . import b\ndef f():\n    from vertgrade.pkg.c import thing\n    import vertgrade.d\n"
    )
    path = tmp_path / "a.py"
    path.write_text(src)
    known = {"vertgrade.pkg.a", "vertgrade.pkg.b", "vertgrade.pkg.c", "vertgrade.d"}
    assert _imports("vertgrade.pkg.a", path, known) == {
        "vertgrade.pkg.b",
        "vertgrade.pkg.c",
        "vertgrade.d",
    }
