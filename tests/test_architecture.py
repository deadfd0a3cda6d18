"""The house's rules, checked on the code itself: no import circles, no method known by its
name outside its own module, no private name imported from another module."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO, cli_env

PACKAGE = REPO / "rlhf"


def modules() -> dict[str, ast.Module]:
    """Every module of the package (the shipped assets' builders included), parsed."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return found


def imports_of(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules this module imports, at the top or inside a function."""
    deps = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("rlhf"):
            for alias in node.names:  # `from rlhf import rundir` imports the module rlhf.rundir
                deps.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name.startswith("rlhf"))
    # A package's __init__ runs before its modules: importing rlhf.a.b imports rlhf.a too, but a
    # module importing its own package (or its package importing it) is not a circle.
    return {d for d in deps if d in known and d != name and not name.startswith(d + ".")
            and not d.startswith(name + ".")}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, done = [], set()

    def visit(node: str, stack: list[str]) -> None:
        for dep in sorted(graph[node]):
            if dep in stack:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, stack + [dep])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return cycles


def test_find_cycles_finds_a_circle_and_only_that():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_between_modules():
    trees = modules()
    graph = {name: imports_of(name, tree, set(trees)) for name, tree in trees.items()}
    assert find_cycles(graph) == []


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """A circle the walk above missed (a dynamic import) fails here as an ImportError."""
    names = [n for n in modules() if not n.endswith("__main__")]
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    for name in names:  # each alone, so that no earlier import hides an order problem
        proc = subprocess.run([sys.executable, "-c", script, name], cwd=REPO, env=cli_env(),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"import {name} failed:\n{proc.stderr[-3000:]}"


def method_names() -> set[str]:
    from rlhf.methods import method_names as names

    return set(names())


# Where a method's name may stand as a string: its own module; the benchmark, whose plain TRL
# scripts are written per method as a user would (the baseline the platform is measured
# against); and the asset builder, which names the shipped data files (topics_kto.*.jsonl).
NAME_ALLOWED = ("rlhf/methods/", "rlhf/bench/", "rlhf/assets/build_data.py")


def test_no_method_name_as_a_string_outside_its_module():
    names = method_names()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(REPO))
        if relative.startswith(NAME_ALLOWED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        messages = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
                    and id(node) not in messages):
                found.append(f"{relative}:{node.lineno}: {node.value!r}")
    assert found == []


def test_no_private_name_is_imported_from_another_module():
    found = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rlhf"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    found.append(f"{name} imports {', '.join(private)} from {node.module}")
    assert found == []
