"""The house's rules, checked on the code itself: every import runs down the layers of sides
(rlhf.LAYERS), the top of rlhf/ holds only entry points, no import circles, no private name
imported from another module, no method known by its name outside rlhf/methods/, and no long
function without its reason. Each rule is a function of the parsed code, shown here to fail on
a deliberate violation, then run on the package."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

from conftest import REPO, cli_env

PACKAGE = REPO / "rlhf"
LONG_FUNCTION = 60  # lines; a longer function says why in its docstring ("long because ...")


def parse(files: dict[str, str]) -> dict[str, ast.Module]:
    """Modules by dotted name, from {relative path: source} (a package's __init__ is the package)."""
    found = {}
    for path, text in files.items():
        name = path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        found[name] = ast.parse(text, filename=path)
    return found


def modules() -> dict[str, ast.Module]:
    """Every module of the package (the shipped assets' builders included), parsed."""
    files = {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py"))}
    return parse(files)


def imports_of(name: str, tree: ast.Module, known: set[str]) -> dict[str, int]:
    """The package's modules this module imports, at the top or inside a function, each with
    the line of its first import."""
    deps: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("rlhf"):
            for alias in node.names:  # `from rlhf.run import rundir` imports the module rlhf.run.rundir
                full = f"{node.module}.{alias.name}"
                deps.setdefault(full if full in known else node.module, node.lineno)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("rlhf"):
                    deps.setdefault(alias.name, node.lineno)
    return {d: line for d, line in deps.items() if d in known and d != name}


def graph_of(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Who imports whom. A package's __init__ runs before its modules: importing rlhf.a.b
    imports rlhf.a too, but a module importing its own package (or its package importing it) is
    not a circle."""
    known = set(trees)
    return {name: {d for d in imports_of(name, tree, known)
                   if not name.startswith(d + ".") and not d.startswith(name + ".")}
            for name, tree in trees.items()}


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


# ---------------------------------------------------------------------------- the rules


def layer_violations(trees: dict[str, ast.Module], layers: tuple[tuple[str, ...], ...]) -> list[str]:
    """Imports that run up the layers: a module of a side importing a side above it, or any side
    importing an entry point (a module at the top of the package). Entry points may import
    anything; a package at the top that is no side of `layers` is a violation of its own."""
    level = {side: index for index, sides in enumerate(layers) for side in sides}
    found = []

    def side(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else None

    for name, tree in sorted(trees.items()):
        own = side(name)
        if own is None or own not in level:
            continue  # the package itself, or an entry point
        for dep, line in sorted(imports_of(name, tree, set(trees)).items()):
            other = side(dep)
            if other is None:
                continue
            if other not in level:
                found.append(f"{name}:{line} ({own}) imports the entry point {dep}")
            elif level[other] > level[own]:
                found.append(f"{name}:{line} ({own}) imports {dep} ({other}, a side above)")
    return found


def unplaced(trees: dict[str, ast.Module], layers: tuple[tuple[str, ...], ...]) -> list[str]:
    """What stands at the top of the package without being a side or an entry point: a package
    that is no side of `layers`, or a module without a `main` run under `__name__ == "__main__"`."""
    sides = {side for sides in layers for side in sides}
    found = []
    tops = {name.split(".")[1] for name in trees if name.count(".") >= 1}
    for top in sorted(tops):
        name = f"rlhf.{top}"
        is_package = any(n.startswith(name + ".") for n in trees)
        if is_package:
            if top not in sides:
                found.append(f"{name}: a package that is no side of rlhf.LAYERS")
        elif not is_entry_point(trees[name]):
            found.append(f"{name}: a module at the top of rlhf/ that is not an entry point (no main() run "
                         "under __name__ == '__main__'): move it into the side it belongs to")
    return found


def is_entry_point(tree: ast.Module) -> bool:
    """Whether the module runs `main()` when run as `python -m` (its whole reason to be at the top)."""
    for node in tree.body:
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test):
            return any(isinstance(n, ast.Call) and ast.unparse(n.func) == "main" for n in ast.walk(node))
    return False


def private_imports(trees: dict[str, ast.Module]) -> list[str]:
    found = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rlhf"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    found.append(f"{name} imports {', '.join(private)} from {node.module}")
    return found


def method_name_literals(trees: dict[str, ast.Module], names: set[str]) -> list[str]:
    """String constants equal to a method's name outside rlhf.methods. Not counted: a part of an
    f-string (a message about the method the run trains), and the value of a `loss_type` keyword,
    which is TRL's own loss name (CPOConfig(loss_type="simpo"), GRPOConfig(loss_type="grpo"))."""
    found = []
    for name, tree in sorted(trees.items()):
        if name == "rlhf.methods" or name.startswith("rlhf.methods."):
            continue
        exempt = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
        exempt |= {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.keyword) and node.arg == "loss_type"}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
                    and id(node) not in exempt):
                found.append(f"{name}:{node.lineno}: {node.value!r}")
    return found


def long_functions(trees: dict[str, ast.Module], limit: int = LONG_FUNCTION) -> list[str]:
    """Functions of more than `limit` lines whose docstring does not say why ("long because")."""
    found = []
    for name, tree in sorted(trees.items()):
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit and "long because" not in (ast.get_docstring(node) or "").lower():
                    found.append(f"{name}.{node.name}: {lines} lines")
    return found


# ---------------------------------------------------------------------------- each rule can fail

LAYERS = (("core",), ("data",), ("launch",))


def broken(**files: str) -> dict[str, ast.Module]:
    return parse({path.replace("__", "/") + ".py": textwrap.dedent(text) for path, text in files.items()})


def test_an_import_up_the_layers_fails_and_one_down_passes():
    trees = broken(rlhf__core__a="from rlhf.data import b\n", rlhf__data__b="from rlhf.core import a\n",
                   rlhf__launch__c="import rlhf.data.b\n")
    assert layer_violations(trees, LAYERS) == ["rlhf.core.a:1 (core) imports rlhf.data.b (data, a side above)"]


def test_a_side_importing_an_entry_point_fails():
    trees = broken(rlhf__data__b="def f():\n    from rlhf.train import main\n",
                   rlhf__train="def main():\n    pass\nif __name__ == '__main__':\n    main()\n")
    assert layer_violations(trees, LAYERS) == ["rlhf.data.b:2 (data) imports the entry point rlhf.train"]


def test_a_module_at_the_top_that_is_no_entry_point_fails_and_a_stray_package_too():
    trees = broken(rlhf__helpers="def f():\n    pass\n",
                   rlhf__train="def main():\n    pass\nif __name__ == '__main__':\n    main()\n",
                   rlhf__misc__x="", rlhf__core__y="")
    problems = unplaced(trees, LAYERS)
    assert [p.split(":")[0] for p in problems] == ["rlhf.helpers", "rlhf.misc"]


def test_find_cycles_finds_a_circle_and_only_that():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    trees = broken(rlhf__data__a="from rlhf.data import b\n", rlhf__data__b="def f():\n    from rlhf.data import a\n")
    assert find_cycles(graph_of(trees)) == [["rlhf.data.a", "rlhf.data.b", "rlhf.data.a"]]


def test_a_private_import_fails():
    trees = broken(rlhf__data__a="from rlhf.core.b import _hidden, shown\n")
    assert private_imports(trees) == ["rlhf.data.a imports _hidden from rlhf.core.b"]


def test_a_method_name_literal_outside_methods_fails_but_a_message_and_a_trl_loss_do_not():
    trees = broken(rlhf__data__a="if kind == 'kto':\n    pass\nx = f'train it with method={kind}'\n"
                                 "args = Config(loss_type='simpo')\n",
                   rlhf__methods__kto="KIND = 'kto'\n")
    assert method_name_literals(trees, {"kto", "simpo"}) == ["rlhf.data.a:1: 'kto'"]


def test_a_long_function_without_its_reason_fails():
    body = "\n".join(f"    x{i} = {i}" for i in range(LONG_FUNCTION))
    trees = broken(rlhf__data__a=f"def long():\n{body}\n\ndef explained():\n    '''Long because it must be.'''\n"
                                 f"{body}\n")
    assert long_functions(trees) == [f"rlhf.data.a.long: {LONG_FUNCTION + 1} lines"]


# ---------------------------------------------------------------------------- the package itself


def test_every_import_runs_down_the_layers():
    from rlhf import LAYERS as SIDES

    assert layer_violations(modules(), SIDES) == []


def test_the_top_of_the_package_holds_only_sides_and_entry_points():
    from rlhf import LAYERS as SIDES

    assert unplaced(modules(), SIDES) == []


def test_no_import_circles_between_modules():
    assert find_cycles(graph_of(modules())) == []


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """A circle the walk above missed (a dynamic import) fails here as an ImportError."""
    names = [n for n in modules() if not n.endswith("__main__")]
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    for name in names:  # each alone, so that no earlier import hides an order problem
        proc = subprocess.run([sys.executable, "-c", script, name], cwd=REPO, env=cli_env(),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"import {name} failed:\n{proc.stderr[-3000:]}"


def test_no_method_name_as_a_string_outside_its_module():
    from rlhf.methods import method_names

    assert method_name_literals(modules(), set(method_names())) == []


def test_no_private_name_is_imported_from_another_module():
    assert private_imports(modules()) == []


def test_no_long_function_without_its_reason():
    assert long_functions(modules()) == []
