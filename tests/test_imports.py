"""The house's arrows point one way: no import cycle inside the geventman package.

Imports are read from the source with ast, function-level ones included (a lazy
import is still an arrow). ``from geventman.x import name`` is an arrow to
geventman.x, or to geventman.x.name when that is a module; a package's own
``__init__`` is not counted as imported by its submodules (Python loads it first
anyway, and it imports nothing of theirs at module level).
"""
import ast
import os

import geventman

PACKAGE = os.path.dirname(os.path.abspath(geventman.__file__))


def modules():
    """{dotted name: path} of every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            parts = ["geventman"] + os.path.relpath(path, PACKAGE)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported_names(module, path, is_package):
    """Every module name an import statement anywhere in ``path`` names."""
    tree = ast.parse(open(path).read(), path)
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield base
            for alias in node.names:
                yield "%s.%s" % (base, alias.name)


def graph():
    known = modules()
    edges = {}
    for module, path in known.items():
        targets = set()
        for name in imported_names(module, path, path.endswith("__init__.py")):
            if name in known and name != module and not module.startswith(name + "."):
                targets.add(name)
        edges[module] = targets
    return edges


def find_cycle(edges):
    """One cycle as a list of modules, or None (depth-first search, three colours)."""
    colour, stack = {}, []

    def visit(node):
        colour[node] = "grey"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if colour.get(target) == "grey":
                return stack[stack.index(target):] + [target]
            if target not in colour:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        colour[node] = "black"
        return None

    for node in sorted(edges):
        if node not in colour:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_function_level_imports():
    edges = graph()
    assert "geventman.master" in edges["geventman.cli"]  # imported inside do_start
    assert "geventman.states" in edges["geventman.protocols.timeout"]


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_protocols_import_nothing_above_them():
    """DESIGN §1: protocols are at the bottom; they never import connections,
    workers, the master or the commands."""
    above = ("geventman.connection", "geventman.worker", "geventman.master",
             "geventman.cli", "geventman.webserver")
    for module, targets in graph().items():
        if module.startswith("geventman.protocols"):
            wrong = [t for t in targets if t.startswith(above)]
            assert not wrong, "%s imports %s" % (module, wrong)
