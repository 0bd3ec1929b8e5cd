"""The floors: imports only point down, there is no import circle, a serving worker never imports training, and no
module is over 500 lines.

Floors, lowest first: 1 `schemas`, 2 `models`, 3 `stream` (all of it but the CLI), 4 `training`, 5 the CLI
(`stream.cli`, `stream.__main__`). A module may import its own floor or a lower one. `bench/` and `tests/` sit
above everything: they may import anything, and nothing on a floor may import them.

Every import counts, wherever it is written: at module level, inside a function (a lazy import runs on the first
call, so it is as real as any other), and `importlib.import_module("...")` / `__import__("...")` with a literal
name. `from pkg import name` is an edge to `pkg.name` when that is a module, else to `pkg`. The checker reads the
source with `ast` and imports nothing; the tests at the end run it on small synthetic trees to show that every
kind of violation is reported, and one test imports the serving path for real to confirm that `training` stays out
of `sys.modules`.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FLOOR_PACKAGES = ("schemas", "models", "stream", "training")  # the packages whose imports are checked
LENGTH_CHECKED = ("stream", "models", "training", "schemas", "deploy", "bench")
MAX_LINES = 500
CLI_MODULES = ("stream.cli", "stream.__main__")
FLOORS = {"schemas": 1, "models": 2, "stream": 3, "training": 4}
CLI_FLOOR = 5
ABOVE_ALL = {"bench": 6, "tests": 6}  # may import anything; never imported from a floor
FLOOR_NAMES = {1: "schemas", 2: "models", 3: "stream", 4: "training", 5: "CLI", 6: "bench/tests"}


@dataclass(frozen=True)
class Edge:
    source: str  # the importing module
    target: str  # the imported module, resolved against the tree
    path: str    # the importing file, relative to the tree's root
    line: int
    lazy: bool   # written inside a function: runs on the first call, not at import
    text: str    # the import as written

    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def describe(self) -> str:
        return f"{self.source} -> {self.target} ({'lazy ' if self.lazy else ''}`{self.text}`)"


# -- reading the tree ---------------------------------------------------------------------------------------------
def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: Path, packages=FLOOR_PACKAGES) -> dict[str, Path]:
    """module name -> file, for every .py under the given top-level packages. A folder of modules without an
    ``__init__.py`` is still importable (a namespace package): it maps to the folder, which has no imports."""
    out: dict[str, Path] = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            if "__pycache__" not in path.parts:
                out[module_name(root, path)] = path
    for name in list(out):
        parts = name.split(".")
        for k in range(1, len(parts)):
            out.setdefault(".".join(parts[:k]), root.joinpath(*parts[:k]))
    return out


def floor(module: str) -> int | None:
    if module in CLI_MODULES or module.startswith(tuple(m + "." for m in CLI_MODULES)):
        return CLI_FLOOR
    top = module.split(".")[0]
    return FLOORS.get(top, ABOVE_ALL.get(top))


def _is_internal(name: str) -> bool:
    return floor(name) is not None


def absolute(package: str, level: int, module: str | None) -> str:
    """What a relative import names: ``level`` dots from ``package`` (one dot: the package itself), then
    ``module``."""
    parts = package.split(".")
    base = parts[:len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


class _ImportCollector(ast.NodeVisitor):
    """Every import statement and literal dynamic import in one file, with whether it sits in a function."""

    def __init__(self, module: str, is_package: bool):
        self.module, self.is_package = module, is_package
        self.depth = 0
        self.found: list[tuple[str, list[str] | None, int, bool, str]] = []  # (module, names or None, line, lazy, text)

    def _function(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _add(self, module: str, names: list[str] | None, node: ast.AST, text: str) -> None:
        self.found.append((module, names, node.lineno, self.depth > 0, text))

    def _absolute(self, level: int, module: str | None) -> str:
        """A relative import's module: `from .x import y` in a.b.c (or in a/b/__init__.py) reads a.b.x."""
        package = self.module if self.is_package else self.module.rpartition(".")[0]
        return absolute(package, level, module)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, None, node, f"import {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module == "__future__":
            return
        base = self._absolute(node.level, node.module) if node.level else node.module
        names = [a.name for a in node.names]
        self._add(base, names, node, f"from {'.' * node.level}{node.module or ''} import {', '.join(names)}")

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        dynamic = ((isinstance(f, ast.Attribute) and f.attr == "import_module"
                    and isinstance(f.value, ast.Name) and f.value.id == "importlib")
                   or (isinstance(f, ast.Name) and f.id in ("import_module", "__import__")))
        if dynamic and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            name = node.args[0].value
            text = f"{ast.unparse(f)}({name!r})"
            if name.startswith("."):  # import_module(".x", "pkg") or package="pkg": relative to that package
                package = node.args[1] if len(node.args) > 1 else next(
                    (k.value for k in node.keywords if k.arg == "package"), None)
                known = isinstance(package, ast.Constant) and isinstance(package.value, str)
                rest = name.lstrip(".")
                name = absolute(package.value, len(name) - len(rest), rest or None) if known else ""
            if name:
                self._add(name, None, node, text)
        self.generic_visit(node)


def collect_edges(root: Path, modules: dict[str, Path]) -> tuple[list[Edge], list[str]]:
    """(edges between modules of the tree, problems: internal imports that name no module of the tree)."""
    edges, problems = [], []
    for module, path in modules.items():
        if path.is_dir():
            continue  # a namespace package: nothing runs on import
        rel = path.relative_to(root).as_posix()
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        except SyntaxError as exc:
            problems.append(f"{rel}:{exc.lineno}: cannot be parsed: {exc.msg}")
            continue
        collector = _ImportCollector(module, path.name == "__init__.py")
        collector.visit(tree)
        for name, names, line, lazy, text in collector.found:
            if not _is_internal(name):
                continue  # the standard library or a third-party package
            if name.split(".")[0] in FLOORS and name not in modules:
                problems.append(f"{rel}:{line}: `{text}` names no module of the tree ({name})")
                continue
            # bench/tests are not scanned, so they are not in `modules`; the edge still counts for the floor rule.
            targets = [f"{name}.{n}" if f"{name}.{n}" in modules else name for n in names] if names else [name]
            for target in dict.fromkeys(targets):
                edges.append(Edge(module, target, rel, line, lazy, text))
    return edges, problems


# -- the rules ------------------------------------------------------------------------------------------------------
def upward_imports(edges: list[Edge]) -> list[str]:
    out = []
    for e in edges:
        src, dst = floor(e.source), floor(e.target)
        if dst > src:
            out.append(f"{e.where()}: upward import, floor {src} ({FLOOR_NAMES[src]}) -> floor {dst} "
                       f"({FLOOR_NAMES[dst]}): {e.describe()}")
    return out


def strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative, so deep chains cannot hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.get(child, []))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    out.append(sorted(component))
    return out


def _shortest_cycle(start: str, members: set[str], graph: dict[str, list[str]]) -> list[str]:
    """The shortest path start -> ... -> start inside one component (breadth first)."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in graph.get(node, []):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, start]
                if child in members and child not in parent:
                    parent[child] = node
                    nxt.append(child)
        frontier = nxt
    return [start]


def import_circles(edges: list[Edge]) -> list[str]:
    by_pair: dict[tuple[str, str], Edge] = {}
    graph: dict[str, list[str]] = {}
    for e in edges:
        if e.source == e.target:
            continue  # a module naming itself (`from . import x` in a package's __init__) is no circle
        if (e.source, e.target) not in by_pair:
            by_pair[(e.source, e.target)] = e
            graph.setdefault(e.source, []).append(e.target)
    out = []
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        cycle = _shortest_cycle(component[0], set(component), graph)
        steps = "; ".join(f"{by_pair[a, b].where()}: {by_pair[a, b].describe()}" for a, b in zip(cycle, cycle[1:]))
        out.append(f"import circle {' -> '.join(cycle)} (modules in the circle: {', '.join(component)}): {steps}")
    return out


def long_modules(root: Path, dirs=LENGTH_CHECKED, limit: int = MAX_LINES) -> list[str]:
    out = []
    for d in dirs:
        for path in sorted((root / d).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > limit:
                out.append(f"{path.relative_to(root).as_posix()}:{limit + 1}: {n} lines, over the {limit}-line limit")
    return out


def check_imports(root: Path, packages=FLOOR_PACKAGES) -> dict[str, list[str]]:
    """The import problems of the tree under ``root``, by rule: "unresolved" (an import of the floors' packages
    that names no module), "upward", "circles"."""
    edges, unresolved = collect_edges(root, discover(root, packages))
    return {"unresolved": unresolved, "upward": upward_imports(edges), "circles": import_circles(edges)}


def check_tree(root: Path) -> list[str]:
    """Every rule at once: what the synthetic-tree tests below run."""
    found = check_imports(root)
    return found["unresolved"] + found["upward"] + found["circles"] + long_modules(root)


def _report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n" + "\n".join(problems)


# -- the real tree --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_tree() -> dict[str, list[str]]:
    return check_imports(REPO)


def test_imports_only_point_down(real_tree):
    assert not real_tree["upward"], _report(real_tree["upward"])


def test_no_import_circles(real_tree):
    assert not real_tree["circles"], _report(real_tree["circles"])


def test_every_import_of_the_floors_names_a_module(real_tree):
    assert not real_tree["unresolved"], _report(real_tree["unresolved"])


def test_no_module_over_500_lines():
    problems = long_modules(REPO)
    assert not problems, _report(problems)


IMPORT_EVERY_MODULE = """
import sys
from pathlib import Path

for pkg in {packages!r}:
    for path in sorted(Path(pkg).rglob("*.py")):
        parts = list(path.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if "__pycache__" not in path.parts and name not in {cli!r}:
            __import__(name)
"""

LOAD_EVERY_BUNDLED_MODEL = """
from models.registry import Registry
from stream.config import Settings
from stream.worker import load_classifiers

# What `stampflow serve` does before its loop: load the models it serves (here every bundled one).
load_classifiers(Settings(), [f"{i.name}@{i.version}" for i in Registry().list()])
"""


def training_modules_after(code: str, cwd: Path = REPO) -> list[str]:
    """The `training` modules in sys.modules after running ``code`` in a fresh interpreter in ``cwd``."""
    probe = code + "\nimport json, sys\n" \
        "print(json.dumps(sorted(m for m in sys.modules if m == 'training' or m.startswith('training.'))))\n"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_serving_never_imports_training():
    """At run time, not just in the source: every module below the CLI imported, and every bundled model loaded
    the way a worker loads it, leave no `training` module in sys.modules."""
    code = IMPORT_EVERY_MODULE.format(packages=("schemas", "models", "stream"), cli=CLI_MODULES)
    loaded = training_modules_after(code + LOAD_EVERY_BUNDLED_MODEL)
    assert loaded == [], f"the serving path imported {loaded}"


# -- the checker can fail ---------------------------------------------------------------------------------------------
def write_tree(root: Path, files: dict[str, str]) -> Path:
    for pkg in FLOOR_PACKAGES:
        (root / pkg).mkdir(parents=True, exist_ok=True)
        (root / pkg / "__init__.py").touch()
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def only(problems: list[str], needle: str) -> list[str]:
    return [p for p in problems if needle in p]


def test_a_clean_tree_passes(tmp_path):
    root = write_tree(tmp_path, {
        "schemas/packet.py": "import json\n",
        "models/base.py": "from schemas.packet import Packet\nfrom schemas import packet\n",
        "stream/engine.py": "from models.base import Classifier\nfrom . import worker\n",
        "stream/worker.py": "import stream.config\n",
        "stream/config.py": "import schemas.packet\n",
        "training/fit.py": "from stream.engine import Engine\nfrom models import base\n",
        "stream/cli.py": "def train():\n    from training.fit import fit\n",
        "stream/__main__.py": "from stream.cli import main\n",
        "training/family/network.py": "from models import base\n",  # training.family: no __init__.py
        "training/registry.py": "from training.family import network\nimport training.family\n",
        "bench/run.py": "from stream.cli import main\n" + "x = 1\n" * (MAX_LINES - 1),
    })
    assert check_tree(root) == []


def test_an_upward_import_is_reported_with_file_line_and_edge(tmp_path):
    root = write_tree(tmp_path, {"schemas/packet.py": "import json\n\nfrom models.base import Classifier\n",
                                 "models/base.py": ""})
    problems = check_tree(root)
    assert problems == ["schemas/packet.py:3: upward import, floor 1 (schemas) -> floor 2 (models): "
                        "schemas.packet -> models.base (`from models.base import Classifier`)"]


def test_a_lazy_upward_import_is_reported(tmp_path):
    root = write_tree(tmp_path, {
        "stream/worker.py": "def load():\n    if True:\n        import training.fit\n",
        "training/fit.py": "",
    })
    (problem,) = check_tree(root)
    assert problem.startswith("stream/worker.py:3: upward import, floor 3 (stream) -> floor 4 (training)")
    assert "stream.worker -> training.fit (lazy `import training.fit`)" in problem


def test_dynamic_and_relative_imports_are_edges(tmp_path):
    root = write_tree(tmp_path, {
        "models/registry.py": "import importlib\n\ndef load():\n    return importlib.import_module('training.fit')\n",
        "schemas/stamps.py": "def f():\n    return __import__('stream.engine')\n",
        "training/fit.py": "from ..stream import cli\n",  # a relative import from training up to the CLI
        "stream/engine.py": "import importlib\nimportlib.import_module('.fit', package='training')\n",
        "stream/cli.py": "",
    })
    problems = check_tree(root)
    assert len(only(problems, "models/registry.py:4: upward import, floor 2 (models) -> floor 4 (training): "
                              "models.registry -> training.fit (lazy `importlib.import_module('training.fit')`)")) == 1
    assert len(only(problems, "schemas/stamps.py:2: upward import, floor 1 (schemas) -> floor 3 (stream)")) == 1
    assert len(only(problems, "training/fit.py:1: upward import, floor 4 (training) -> floor 5 (CLI): "
                              "training.fit -> stream.cli")) == 1
    assert len(only(problems, "stream/engine.py:2: upward import, floor 3 (stream) -> floor 4 (training): "
                              "stream.engine -> training.fit")) == 1
    assert len(problems) == 4, problems


def test_serving_importing_training_or_a_floor_importing_tests_is_upward(tmp_path):
    root = write_tree(tmp_path, {"stream/replay.py": "from training.archives import iter_archive\n",
                                 "training/archives.py": "from tests.cutouts import make\n"})
    problems = check_tree(root)
    assert only(problems, "stream/replay.py:1: upward import, floor 3 (stream) -> floor 4 (training)")
    assert only(problems, "training/archives.py:1: upward import, floor 4 (training) -> floor 6 (bench/tests)")


def test_an_import_of_no_module_is_reported(tmp_path):
    root = write_tree(tmp_path, {"stream/worker.py": "from stream.gone import x\n"})
    assert check_tree(root) == ["stream/worker.py:1: `from stream.gone import x` names no module of the tree "
                                "(stream.gone)"]


def test_an_import_circle_is_reported_lazy_edges_included(tmp_path):
    root = write_tree(tmp_path, {
        "schemas/packet.py": "from schemas.stamps import Stamp\n",
        "schemas/stamps.py": "class Stamp:\n    def image(self):\n        from schemas import packet\n",
    })
    (problem,) = check_tree(root)
    assert problem.startswith("import circle schemas.packet -> schemas.stamps -> schemas.packet")
    assert "schemas/packet.py:1: schemas.packet -> schemas.stamps (`from schemas.stamps import Stamp`)" in problem
    assert "schemas/stamps.py:3: schemas.stamps -> schemas.packet (lazy `from schemas import packet`)" in problem


def test_a_longer_circle_through_a_package_init_is_reported(tmp_path):
    root = write_tree(tmp_path, {
        "stream/decode/__init__.py": "from stream.decode.decoder import Decoder\n",
        "stream/decode/decoder.py": "from .mappers import ztf\n",
        "stream/decode/mappers.py": "from stream.decode import Decoder\n",  # re-exported name: the package itself
    })
    (problem,) = check_tree(root)
    assert "import circle" in problem
    for edge in ("stream/decode/__init__.py:1: stream.decode -> stream.decode.decoder",
                 "stream/decode/decoder.py:1: stream.decode.decoder -> stream.decode.mappers",
                 "stream/decode/mappers.py:1: stream.decode.mappers -> stream.decode"):
        assert edge in problem


def test_a_module_over_500_lines_is_reported(tmp_path):
    root = write_tree(tmp_path, {"deploy/tools/check.py": "x = 1\n" * (MAX_LINES + 1),
                                 "training/fit.py": "x = 1\n" * MAX_LINES})
    assert check_tree(root) == [f"deploy/tools/check.py:{MAX_LINES + 1}: {MAX_LINES + 1} lines, "
                                f"over the {MAX_LINES}-line limit"]


@pytest.mark.parametrize("graph, circles", [
    ({"a": ["b"], "b": ["c"], "c": []}, []),
    ({"a": ["b"], "b": ["a"], "c": ["a"]}, [["a", "b"]]),
    ({"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["e"], "e": ["d"]}, [["a", "b", "c"], ["d", "e"]]),
])
def test_strongly_connected_components(graph, circles):
    assert sorted(c for c in strongly_connected(graph) if len(c) > 1) == circles


def test_the_run_time_probe_sees_training(tmp_path):
    root = write_tree(tmp_path, {"stream/worker.py": "import training.fit\n", "training/fit.py": ""})
    code = IMPORT_EVERY_MODULE.format(packages=("schemas", "models", "stream"), cli=CLI_MODULES)
    assert training_modules_after(code, cwd=root) == ["training", "training.fit"]
