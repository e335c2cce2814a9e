"""The package's layers, read from its imports: a module may import its own layer and the
ones below it, never one above, and no two modules import each other, directly or through
others. Imports inside functions count: a lazy import is still a dependency, and the
cycles this test was written against (quantize <-> finetune <-> fp16) were all lazy.

    base      errors, jit_cache, precision, data          (the package root too)
    kernels   kernels, runtime, devices                   (threads and BLAS pinning)
    nn        nn, models, zoo                             (layers, blocks, the zoo)
    rules     rules                                       (LLS family and baselines)
    trainer   optim, trainer
    program   program, fp16, formats                      (what is deployed)
    finetune  finetune, predict, board_train
    workflows evaluate, training_run, profile, tflm,      (runs, evaluation, profiling, peers,
              export, board_plan                          export, the board's memory plan)
    commands  cli, __main__                               (the command line)
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LAYERS = [
    ("base", {"", "errors", "jit_cache", "precision", "data"}),
    ("kernels", {"kernels", "runtime", "devices"}),
    ("nn", {"nn", "models", "zoo"}),
    ("rules", {"rules"}),
    ("trainer", {"optim", "trainer"}),
    ("program", {"program", "fp16", "formats"}),
    ("finetune", {"finetune", "predict", "board_train"}),
    ("workflows", {"evaluate", "training_run", "profile", "tflm", "export", "board_plan"}),
    ("commands", {"cli", "__main__"}),
]
RANK = {part: rank for rank, (_, parts) in enumerate(LAYERS) for part in parts}


def package_sources() -> dict[str, str]:
    """Module name -> source, for edge_lls/ and the zoo (models/, installed as edge_lls.zoo)."""
    sources = {}
    for root, package in ((REPO / "edge_lls", "edge_lls"), (REPO / "models", "edge_lls.zoo")):
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            sources[".".join([package, *parts])] = path.read_text()
    return sources


def _is_package(module: str, sources: dict[str, str]) -> bool:
    return any(other.startswith(module + ".") for other in sources)


def imports_of(module: str, source: str, sources: dict[str, str]) -> set[str]:
    """The edge_lls modules `module` imports anywhere in its file (relative ones resolved)."""
    package = module if _is_package(module, sources) else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import sub` imports the submodule when there is one
            names = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in sources else stem for alias in node.names]
        else:
            continue
        found.update(name for name in names if name == "edge_lls" or name.startswith("edge_lls."))
    # Importing a.b.c runs a/__init__ and a/b/__init__ first: from outside a package, an
    # import of its submodule is an import of the package too (the cycle a re-exporting
    # __init__ creates). From inside, the package is already being imported.
    for name in list(found):
        parts = name.split(".")
        for depth in range(2, len(parts)):
            parent = ".".join(parts[:depth])
            if parent in sources and not (module == parent or module.startswith(parent + ".")):
                found.add(parent)
    found.discard(module)
    return found


def component(module: str) -> str:
    """edge_lls.kernels.conv -> 'kernels'; the package root -> ''."""
    return module.split(".")[1] if "." in module else ""


def layering_violations(sources: dict[str, str]) -> list[str]:
    problems = []
    graph = {m: imports_of(m, s, sources) for m, s in sources.items()}
    for module, targets in graph.items():
        missing = sorted(t for t in targets if t not in sources)
        if missing:
            problems.append(f"{module}: imports {', '.join(missing)}, which does not exist")
        unknown = {component(m) for m in (module, *targets)} - set(RANK)
        if unknown:
            problems.append(f"{module}: no layer for {sorted(unknown)} (add it to LAYERS)")
            continue
        for target in sorted(targets):
            if RANK[component(target)] > RANK[component(module)]:
                problems.append(f"{module} ({LAYERS[RANK[component(module)]][0]}) imports {target} "
                                f"({LAYERS[RANK[component(target)]][0]}), a higher layer")
    problems.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(graph))
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                found.append(sorted(members) + [sorted(members)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_a_higher_layer_and_there_are_no_cycles():
    problems = layering_violations(package_sources())
    assert not problems, "\n".join(problems)


def test_library_modules_never_import_the_command_line():
    sources = package_sources()
    for module, source in sources.items():
        if component(module) not in ("cli", "__main__"):
            assert not any(t.startswith("edge_lls.cli") for t in imports_of(module, source, sources)), module


@pytest.mark.parametrize("victim,back_import", [
    ("edge_lls.kernels.conv", "from edge_lls.cli import main"),              # a low layer reaching up
    ("edge_lls.program.ptq", "    from edge_lls.finetune import quantize_pixels"),  # lazy, inside a function
    ("edge_lls.nn.layers", "from ..trainer import Trainer"),                  # relative
])
def test_the_layering_test_catches_a_back_import(victim, back_import):
    sources = package_sources()
    body = back_import if not back_import.startswith(" ") else f"def _lazy():\n{back_import}\n"
    sources[victim] = sources[victim] + "\n" + body + "\n"
    problems = layering_violations(sources)
    assert any(p.startswith(f"{victim} (") and "a higher layer" in p for p in problems), problems


def test_the_layering_test_catches_an_import_of_a_module_that_does_not_exist():
    sources = package_sources()
    sources["edge_lls.profile.analytic"] += "\ndef _lazy():\n    from .trainer import Trainer\n"   # not ..trainer
    assert "edge_lls.profile.analytic: imports edge_lls.profile.trainer, which does not exist" \
        in layering_violations(sources)


def test_the_layering_test_sees_a_cycle_through_a_package_init():
    # formats/tflite.py imports program.ir; were program/__init__.py to re-export the
    # interpreter (which reads .tflite files), importing formats.tflite would import itself.
    sources = package_sources()
    sources["edge_lls.program"] += "\nfrom .interpreter import load_tflite\n"
    assert any(p.startswith("import cycle:") and "edge_lls.formats.tflite" in p for p in layering_violations(sources))


def test_the_layering_test_catches_a_cycle_within_a_layer():
    sources = package_sources()
    sources["edge_lls.program.ir"] += "\nfrom edge_lls.program import lower\n"      # lower imports ir
    assert any(p.startswith("import cycle:") and "edge_lls.program.ir" in p for p in layering_violations(sources))
