"""The package layout's rules, read from the source (every import, also those inside functions).

- ``medenc.core`` imports only the standard library, torch, numpy, ``medenc.errors`` and ``medenc.atomic``;
- ``medenc.io`` never imports the core (nor any layer above it);
- each layer imports only the layers below it, and no workflow imports ``medenc.cli``;
- no module imports itself through a chain of others (no cycles).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medenc"

#: the layers, lowest first; a module may import its own layer's modules and those of lower layers.
LAYERS: dict[str, int] = {
    "medenc": 0,  # the root package (``__version__``; its lazy API names are strings, not imports)
    "medenc.errors": 0,
    "medenc.atomic": 0,
    "medenc.config": 0,
    "medenc.reporting": 0,
    "medenc.files": 0,
    "medenc.core": 1,
    "medenc.io": 1,
    "medenc.learn": 2,
    "medenc.synth": 3,
    "medenc.experiment": 3,
    "medenc.study": 3,
    "medenc.reader_study": 3,
    "medenc.calibrate": 4,
    "medenc.security": 4,
    "medenc.transforms": 5,
    "medenc.cli": 6,
    "medenc.__main__": 6,  # ``python -m medenc``: the command line
}
#: pairs of layers that must never meet, whatever their ranks
FORBIDDEN = {("medenc.io", "medenc.core"), ("medenc.core", "medenc.io")}
CORE_ALLOWED = {"medenc.errors", "medenc.atomic", "medenc.core"}
CORE_THIRD_PARTY = {"torch", "numpy"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports at run time (``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            for alias in node.names:  # ``from medenc.core import key`` imports medenc.core.key
                if (PACKAGE.parent / (base + "." + alias.name).replace(".", "/")).with_suffix(".py").exists():
                    found.add(base + "." + alias.name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def layer_of(module: str) -> str:
    best = ""
    for name in LAYERS:
        if (module == name or module.startswith(name + ".")) and len(name) > len(best):
            best = name
    return best


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer() -> None:
    missing = [m for m in graph() if not layer_of(m)]
    assert not missing, f"modules outside the layers of tests/test_layout.py: {missing}"


def test_core_imports_only_torch_numpy_and_its_own() -> None:
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for module, deps in graph().items():
        if layer_of(module) != "medenc.core":
            continue
        for dep in deps:
            top = dep.split(".")[0]
            if top == "medenc":
                if layer_of(dep) not in CORE_ALLOWED:
                    bad.append((module, dep))
            elif top not in stdlib and top not in CORE_THIRD_PARTY and top != "__future__":
                bad.append((module, dep))
    assert not bad, bad


def test_layers_import_only_downwards() -> None:
    bad = []
    for module, deps in graph().items():
        mine = layer_of(module)
        for dep in deps:
            if not dep.startswith("medenc"):
                continue
            theirs = layer_of(dep)
            if (mine, theirs) in FORBIDDEN or LAYERS[theirs] > LAYERS[mine]:
                bad.append(f"{module} ({mine}) imports {dep} ({theirs})")
    assert not bad, "\n".join(bad)


def test_no_cycles_between_layers() -> None:
    """Layers of one rank may use each other one way only (e.g. reader_study reads experiment's manifests)."""
    uses: dict[str, set[str]] = {}
    for module, deps in graph().items():
        mine = layer_of(module)
        uses.setdefault(mine, set()).update(
            layer_of(d) for d in deps if d.startswith("medenc") and layer_of(d) not in (mine, "medenc")
        )
    both = sorted({tuple(sorted((a, b))) for a, used in uses.items() for b in used if a in uses.get(b, set())})
    assert not both, both


def test_cli_command_modules_do_not_import_each_other() -> None:
    bad = []
    for module, deps in graph().items():
        if not module.startswith("medenc.cli.") or module == "medenc.cli._app":
            continue
        shared = ("medenc.cli._app", "medenc.cli._common")
        bad += [(module, d) for d in deps if d.startswith("medenc.cli.") and d not in shared]
    assert not bad, bad


def test_no_import_cycles() -> None:
    edges = graph()
    modules = set(edges)
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges[node]):
            if dep not in modules or dep == "medenc" or dep == node:
                continue
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                walk(dep)
        stack.pop()
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            walk(module)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_walker_sees_a_violation(tmp_path: Path) -> None:
    """The checks above can fail: a lazy import inside a function is found, a TYPE_CHECKING one is not."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import medenc.cli\n"
        "def f():\n    from medenc.io import read_image\n    return read_image\n"
    )
    global PACKAGE
    saved = PACKAGE
    try:
        PACKAGE = tmp_path  # module_name() needs a package root above the file
        (tmp_path / "pkg").mkdir()
        moved = tmp_path / "pkg" / "m.py"
        source.rename(moved)
        PACKAGE = tmp_path / "pkg"
        found = imports_of(moved)
    finally:
        PACKAGE = saved
    assert "medenc.io" in found and "medenc.cli" not in found
    assert layer_of("medenc.core.pgd") == "medenc.core" and layer_of("medenc.cli.train") == "medenc.cli"


@pytest.mark.parametrize(
    "modules",
    [
        "medenc.core.key, medenc.core.pgd, medenc.core.fast_model, medenc.core.combine, medenc.core.harden, "
        "medenc.core.encrypt, medenc.core.mapping, medenc.core.slices, medenc.core.fidelity",
    ],
)
def test_core_loads_no_io_or_monai(modules: str) -> None:
    """At run time too: importing the whole core loads no MONAI and no medical-image library."""
    code = (
        f"import sys, {modules};"
        "bad = [m for m in ('monai', 'pydicom', 'nibabel', 'SimpleITK', 'medenc.io') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
