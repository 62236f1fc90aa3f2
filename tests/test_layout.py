"""The package's layout: which folder may import what, and how large a module may grow."""

import ast
from pathlib import Path

import oneword

PACKAGE = Path(oneword.__file__).parent
ADAPTERS = PACKAGE / "adapters"
MODEL_LIBRARIES = ("diffusers", "transformers")
MAX_LINES = 500


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "weights" not in p.parts)


def imports(path: Path, root: Path = PACKAGE.parent) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) of every import statement in the file under
    `root` (the folder that holds the package)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (
                package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            )
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((module, [a.name for a in node.names], node.lineno))
    return found


def test_only_the_adapters_import_diffusers_and_transformers():
    offenders = [
        f"{p.relative_to(PACKAGE)}:{line} imports {module}"
        for p in modules()
        if ADAPTERS not in p.parents
        for module, _, line in imports(p)
        if module.split(".")[0] in MODEL_LIBRARIES
    ]
    assert offenders == []


def test_the_core_imports_no_other_layer():
    """The core (training math, prompts, photos, files) is what every other layer uses."""
    allowed = (
        "oneword.core",
        "oneword.checks",
        "oneword.errors",
        "oneword.events",
        "oneword.files",
    )
    offenders = [
        f"{p.relative_to(PACKAGE)}:{line} imports {module}"
        for p in modules()
        if PACKAGE / "core" in p.parents
        for module, _, line in imports(p)
        if module.startswith("oneword") and not module.startswith(allowed)
    ]
    assert offenders == []


def test_no_module_imports_a_private_name_of_another():
    offenders = [
        f"{p.relative_to(PACKAGE)}:{line} imports {module}.{name}"
        for p in modules()
        for module, names, line in imports(p)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert offenders == []


def test_no_module_is_over_the_size_limit():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_test_can_see_a_boundary_crossing(tmp_path):
    """The import reader resolves relative imports (a check that cannot fail is no check)."""
    sub = tmp_path / "oneword" / "core"
    sub.mkdir(parents=True)
    (sub / "x.py").write_text("from ..adapters.loading import load_model\nimport diffusers\n")
    found = imports(sub / "x.py", root=tmp_path)
    assert ("oneword.adapters.loading", ["load_model"], 1) in found
    assert ("diffusers", [], 2) in found


LAYERS = ["shared", "core", "adapters", "world", "experiments", "search", "front"]
RANK = {
    "__init__": 0,
    "checks": 0,
    "errors": 0,
    "events": 0,
    "files": 0,
    "core": 1,
    "adapters": 2,
    "world": 3,
    "experiments": 4,
    "search": 5,
    "api": 6,
    "cli": 6,
    "web": 6,
    "demo": 6,
}


def layer(module: str) -> int:
    parts = module.split(".")
    return RANK[parts[1]] if len(parts) > 1 else 0


def layer_offenders(paths: list[Path], root: Path = PACKAGE.parent) -> list[str]:
    """Every import of a module from a later layer than the importing module's."""
    offenders = []
    for p in paths:
        own = layer(".".join(p.relative_to(root).with_suffix("").parts))
        for module, names, line in imports(p, root):
            if not module.startswith("oneword"):
                continue
            targets = [f"{module}.{n}" for n in names] if module == "oneword" else [module]
            offenders += [
                f"{p.relative_to(root)}:{line} ({LAYERS[own]}) imports {t}"
                for t in targets
                if layer(t) > own
            ]
    return offenders


def test_each_layer_imports_only_the_layers_before_it():
    """shared < core < adapters < world < experiments < search < front ends (api, cli, web,
    demo): the search (embedding operations, evolution, halving, picks) stands on the store
    and the one training pipeline, and nothing below it reaches up into it."""
    assert layer_offenders(modules()) == []


def test_every_folder_of_the_package_has_a_layer():
    folders = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in modules()}
    assert folders <= set(RANK)
    assert {"search", "experiments"} <= folders


def test_the_layer_rule_sees_the_store_reach_up_into_the_search(tmp_path):
    """An experiments module importing the search (even lazily, inside a function) is caught;
    the search importing the store is not."""
    for folder in ("experiments", "search"):
        (tmp_path / "oneword" / folder).mkdir(parents=True)
    low = tmp_path / "oneword" / "experiments" / "naming.py"
    low.write_text("def f():\n    from ..search.evolve import breed\n")
    high = tmp_path / "oneword" / "search" / "evolve.py"
    high.write_text("from ..experiments.store import Store\n")
    found = layer_offenders([low, high], root=tmp_path)
    assert found == ["oneword/experiments/naming.py:2 (experiments) imports oneword.search.evolve"]
