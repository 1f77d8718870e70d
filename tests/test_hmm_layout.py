"""``fhmm_ppl.hmm``'s modules import one way (no cycle) and stay small."""

import ast
from pathlib import Path

import fhmm_ppl.hmm

PACKAGE = Path(fhmm_ppl.hmm.__file__).parent
MAX_LINES = 450


def imports_within_package() -> dict[str, set[str]]:
    """Module name -> names of the ``fhmm_ppl.hmm`` modules it imports (``__init__`` left out)."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        if path.stem == "__init__":
            continue
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fhmm_ppl.hmm."):
                targets.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                targets |= {a.name.split(".")[2] for a in node.names if a.name.startswith("fhmm_ppl.hmm.")}
        graph[path.stem] = targets
    return graph


def test_no_import_cycle():
    graph = imports_within_package()
    done, on_path = set(), []

    def visit(name):
        assert name not in on_path, f"import cycle: {' -> '.join(on_path[on_path.index(name):] + [name])}"
        if name in done:
            return
        on_path.append(name)
        for target in graph.get(name, ()):
            visit(target)
        on_path.pop()
        done.add(name)

    for name in graph:
        visit(name)


def test_modules_stay_small():
    sizes = {path.name: len(path.read_text().splitlines()) for path in PACKAGE.glob("*.py")}
    assert all(n <= MAX_LINES for n in sizes.values()), sizes
