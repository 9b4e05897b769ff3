"""kstory's modules import downward only, and never in a circle.

The layers, lowest first: helpers with no kstory imports; data; layers and
losses; models; training (with the config that holds its settings, and the
workdir layout); evaluation, export, serving and bench; the CLI and the
package root, which registers every class.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "kstory"

LAYERS = {
    "kstory.compiled_function": 0,
    "kstory.config_checks": 0,
    "kstory.distribution": 0,
    "kstory.provenance": 0,
    "kstory.quiet_start": 0,
    "kstory.version": 0,
    "kstory.workdir_lock": 0,
    "kstory.workdir_state_error": 0,
    "kstory.data": 1,
    "kstory.layers": 2,
    "kstory.losses": 2,
    "kstory.models": 3,
    "kstory.config": 4,
    "kstory.training": 4,
    "kstory.workdir": 4,
    "kstory.bench": 5,
    "kstory.evaluation": 5,
    "kstory.export": 5,
    "kstory.serving": 5,
    "kstory.cli": 6,
    "kstory": 6,
}


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module):
    """The layer of the longest prefix of `module` in LAYERS."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(module)


def kstory_imports(source, module_names):
    """The kstory modules that `source` imports, anywhere in it (function
    bodies included): `from kstory import x` counts as `kstory.x` when that
    is a module."""
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names if a.name.split(".")[0] == "kstory")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "kstory":
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                imported.add(candidate if candidate in module_names else node.module)
    return imported


def import_graph():
    paths = sorted(PACKAGE.rglob("*.py"))
    names = {_module_name(path) for path in paths}
    return {_module_name(path): kstory_imports(path.read_text(), names) for path in paths}


def upward_imports(graph):
    return sorted(
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in graph.items()
        for target in targets
        if _layer(target) > _layer(module)
    )


def cycles(graph):
    """Every import cycle, each as the list of modules around it."""
    found, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_every_module_has_a_layer():
    for module in import_graph():
        _layer(module)


def test_imports_go_downward_only():
    assert upward_imports(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_an_upward_import_is_caught_even_inside_a_function():
    source = "import keras\n\ndef f():\n    from kstory.training.train import train\n"
    graph = {"kstory.models.story_model": kstory_imports(source, set())}
    assert upward_imports(graph) == [
        "kstory.models.story_model (layer 3) imports kstory.training.train (layer 4)"
    ]


def test_a_cycle_is_caught():
    graph = {
        "kstory.evaluation.evaluate": {"kstory.evaluation.predict"},
        "kstory.evaluation.predict": {"kstory.evaluation.evaluate"},
    }
    assert cycles(graph) == [
        ["kstory.evaluation.evaluate", "kstory.evaluation.predict", "kstory.evaluation.evaluate"]
    ]
