"""The project's imports follow the layering in DESIGN.md and form no cycle.

Every import statement of every project module is read with ast, including lazy imports inside functions
and imports under TYPE_CHECKING (a cycle hidden there is still a cycle a reader has to untangle).
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lower layers first; a module may import its own layer and the layers below it.
LAYERS = ("data", "cache", "extract_features", "train_head", "drive")
# Command-line scripts and tests sit above everything; only they may import tools.
TOP = ("tools", "tests")
# drive's game-specific packages; the game-agnostic core (drive/*.py except __main__) never imports them.
GAMES = ("drive.carracing", "drive.gta5")

# Today's violations of the rules above, each (importer, imported) or ("cycle", modules...). Issue 14's
# other parts are removing them (14a moves the embedded game into drive/carracing/, 14b splits
# extract_features/ and turns the benches into a package); the lead empties this list at merge. The test
# also fails when an entry no longer occurs, so the list can only shrink.
KNOWN_VIOLATIONS = frozenset()  # empty: add nothing here; fix the import instead


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file in the project's packages."""
    modules = {}
    for package in LAYERS + TOP:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that `name` imports anywhere in its file (module level or inside functions)."""
    is_package = path.name == "__init__.py"
    found = set()

    def add(target: str) -> None:
        # `import a.b.c` or `from a.b import c`: the longest prefix that is a project module
        parts = target.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in modules:
                found.add(candidate)
                return

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                add(f"{base}.{alias.name}")   # falls back to `base` when the name is not a submodule
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            add(node.args[0].value)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def top_package(module: str) -> str:
    return module.split(".")[0]


def layering_violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    bad = set()
    for importer, targets in graph.items():
        home = top_package(importer)
        for target in targets:
            there = top_package(target)
            if there in TOP:
                if home not in TOP:
                    bad.add((importer, target))
            elif home in LAYERS and LAYERS.index(there) > LAYERS.index(home):
                bad.add((importer, target))
            elif is_drive_core(importer) and any(in_package(target, game) for game in GAMES):
                bad.add((importer, target))
    return bad


def is_drive_core(module: str) -> bool:
    parts = module.split(".")
    return (len(parts) == 2 and parts[0] == "drive" and parts[1] != "__main__"
            and not any(in_package(module, game) for game in GAMES))


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted tuple."""
    index, low, stack, on_stack, found = {}, {}, [], set(), set()
    counter = iter(range(len(graph) * 2 + 1))

    def visit(node: str) -> None:
        index[node] = low[node] = next(counter)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def current_violations() -> set[tuple[str, ...]]:
    graph = import_graph()
    return layering_violations(graph) | {("cycle",) + component for component in cycles(graph)}


def test_no_new_layering_violation_or_import_cycle():
    new = current_violations() - KNOWN_VIOLATIONS
    assert not new, ("imports against DESIGN.md's layering or import cycles (importer, imported): "
                     f"{sorted(new)}")


def test_known_violations_still_occur():
    gone = KNOWN_VIOLATIONS - current_violations()
    assert not gone, f"fixed, remove from KNOWN_VIOLATIONS in tests/test_layering.py: {sorted(gone)}"


def write(root: Path, files: dict[str, str]) -> dict[str, Path]:
    modules = {}
    for name, text in files.items():
        path = root / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        modules[name.removesuffix(".__init__")] = path
    return modules


def graph_of(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    modules = write(tmp_path, files)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_reader_sees_lazy_relative_and_from_imports(tmp_path):
    graph = graph_of(tmp_path, {
        "data.__init__": "",
        "data.a": "def f():\n    from cache import b\n",
        "cache.__init__": "",
        "cache.b": "from . import c\nfrom .c import thing\nimport typing\nif typing.TYPE_CHECKING:\n    import drive.x\n",
        "cache.c": "thing = 1\n",
        "drive.__init__": "",
        "drive.x": "import importlib\nm = importlib.import_module('tools.t')\n",
        "tools.__init__": "",
        "tools.t": "",
    })
    assert graph["data.a"] == {"cache.b"}
    assert graph["cache.b"] == {"cache.c", "drive.x"}
    assert graph["drive.x"] == {"tools.t"}


@pytest.mark.parametrize("importer, target, allowed", [
    ("data.a", "data.b", True),
    ("data.a", "cache.b", False),
    ("cache.a", "data.b", True),
    ("cache.a", "extract_features.b", False),
    ("extract_features.a", "train_head.b", False),
    ("train_head.a", "extract_features.b", True),
    ("train_head.a", "drive.b", False),
    ("drive.agent", "train_head.b", True),
    ("drive.agent", "tools.demo", False),
    ("tools.demo", "tools.record", True),
    ("tests.test_x", "tools.record", True),
    ("drive.loop", "drive.gta5.win32", False),
    ("drive.loop", "drive.carracing.game", False),
    ("drive.__main__", "drive.carracing.game", True),
    ("drive.carracing.evaluate", "drive.loop", True),
    ("drive.gta5.session", "drive.loop", True),
])
def test_layering_rule(importer, target, allowed):
    assert (layering_violations({importer: {target}}) == set()) is allowed


def test_cycle_found_through_three_modules_and_not_in_a_chain():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {("a", "b", "c")}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == set()
