"""Architecture metrics of the current tree (issue 28), and the complexity ratchet's baseline.

Prints, for the checkout this file is in:

(a) import cycles among jpo modules (strongly connected components of grimp's import graph,
    function-level and ``TYPE_CHECKING`` imports included, as import-linter counts them);
(b) the CI stage's walk: files visited, stops (file-to-file transitions) and returns per file
    (re-entries of a file already visited) during one ``jpo.stage.suggest.suggest(...)`` call
    on the test fixture of ``tests/fakes/suggest_campaign.py`` (a second call, after a warm-up
    call, so module imports do not count), traced with ``sys.setprofile`` on Python frames
    whose code lives under ``jpo/``;
(c) the 10 largest functions and classes by lines, and the 10 functions of highest mccabe
    complexity (ruff's C901 count, the number the ratchet holds to 15);
(d) the settings loaders: functions under jpo/ that parse a settings file themselves
    (``tomllib.load[s]``, ``yaml.safe_load``/``yaml.load``), i.e. read a configs/ file;
(e) duplicated blocks (the ``duplicates`` command on PATH) in jpo/ and in the whole tree.

Usage::

    python scripts/architecture_metrics.py                 # print (a) to (e)
    python scripts/architecture_metrics.py --cycles        # (a) only; exit 1 if any cycle
    python scripts/architecture_metrics.py --update-complexity-baseline
        # rewrite tests/complexity_baseline.json from the tree (functions above 15) and
        # print the C901 per-file-ignores lines pyproject.toml must hold for them

Run from the repository root (the script puts the root first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "jpo"
BASELINE_PATH = ROOT / "tests" / "complexity_baseline.json"
MAX_COMPLEXITY = 15  # pyproject.toml [tool.ruff.lint.mccabe] max-complexity
RUFF = Path(sys.executable).parent / "ruff"


# ---------------------------------------------------------------------------------- (a)
def import_graph() -> dict[str, set[str]]:
    """Return jpo's module import graph (module -> modules it imports), built by grimp."""
    sys.path.insert(0, str(ROOT))
    import grimp

    graph = grimp.build_graph("jpo")
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def import_cycles() -> list[list[str]]:
    """Return the import cycles among jpo modules (SCCs of more than one module)."""
    return strongly_connected(import_graph())


# ---------------------------------------------------------------------------------- (b)
def _jpo_file(frame: FrameType | None) -> str | None:
    """Return the innermost jpo/ file on the stack from ``frame`` outwards (relative path)."""
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(str(PACKAGE) + "/"):
            return str(Path(name).relative_to(ROOT))
        frame = frame.f_back
    return None


def suggest_walk() -> list[str]:
    """Return the sequence of jpo files the CI stage passes through in one suggest() call."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from fakes import suggest_campaign as campaign

    sequence: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event not in ("call", "return"):
            return  # c_call / c_return: C functions do not move between jpo files
        where = _jpo_file(frame if event == "call" else frame.f_back)
        if where is not None and (not sequence or sequence[-1] != where):
            sequence.append(where)

    with tempfile.TemporaryDirectory() as tmp:
        source = campaign.FakeSource()
        source.add(campaign.HP, "run-1")
        policy = campaign.make_policy(Path(tmp) / "policy", (0.5, 0.0, 0.0, 0.0))
        for attempt in ("warm-up", "measured"):  # the warm-up pays imports and caches
            folder = Path(tmp) / attempt
            folder.mkdir()
            config = folder / "config.ini"
            config.write_text(campaign.CONFIG, encoding="utf-8")
            if attempt == "measured":
                sys.setprofile(profile)
            try:
                campaign.run(config, source, policy)  # a real write + audit record
            finally:
                sys.setprofile(None)
    return sequence


def walk_summary(sequence: list[str]) -> dict[str, Any]:
    """Return files visited, stops (file-to-file transitions) and returns per file."""
    seen: set[str] = set()
    returns: Counter[str] = Counter()
    for where in sequence:
        if where in seen:
            returns[where] += 1
        seen.add(where)
    return {
        "files": len(seen),
        "stops": max(len(sequence) - 1, 0),
        "returns": dict(returns.most_common()),
    }


# ---------------------------------------------------------------------------------- (c)
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _definitions(path: Path) -> Iterator[tuple[str, ast.AST]]:
    """Yield (qualified name, node) of every function and class in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}.{child.name}"
                yield name, child
                yield from walk(child, name)
            else:
                yield from walk(child, prefix)

    yield from walk(tree, _module_name(path))


def product_files() -> list[Path]:
    """Return jpo's Python files."""
    return sorted(PACKAGE.rglob("*.py"))


def sizes() -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Return (functions, classes) as (qualified name, lines), largest first."""
    functions: list[tuple[str, int]] = []
    classes: list[tuple[str, int]] = []
    for path in product_files():
        for name, node in _definitions(path):
            assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            (classes if isinstance(node, ast.ClassDef) else functions).append((name, lines))
    key = lambda item: (-item[1], item[0])  # noqa: E731
    return sorted(functions, key=key), sorted(classes, key=key)


def complexities(threshold: int = 0) -> dict[str, int]:
    """Return ruff's mccabe complexity (C901) of every jpo function above ``threshold``.

    Runs ruff with ``--isolated`` so pyproject's per-file-ignores do not hide any function.
    """
    ruff = str(RUFF) if RUFF.exists() else (shutil.which("ruff") or "ruff")
    done = subprocess.run(
        [
            ruff,
            "check",
            "--isolated",
            "--no-cache",
            "--select",
            "C901",
            "--config",
            f"lint.mccabe.max-complexity={threshold}",
            "--output-format",
            "json",
            str(PACKAGE),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if done.returncode not in (0, 1):
        raise RuntimeError(f"ruff failed ({done.returncode}): {done.stderr[-2000:]}")
    by_line: dict[tuple[str, int], str] = {}
    for path in product_files():
        for name, node in _definitions(path):
            if not isinstance(node, ast.ClassDef):
                assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                by_line[(str(path), node.lineno)] = name
    found: dict[str, int] = {}
    for item in json.loads(done.stdout or "[]"):
        value = int(item["message"].rsplit("(", 1)[1].split(" ", 1)[0])
        name = by_line[(str(Path(item["filename"]).resolve()), item["location"]["row"])]
        found[name] = max(value, found.get(name, 0))
    return dict(sorted(found.items()))


def update_complexity_baseline() -> None:
    """Write tests/complexity_baseline.json; print the per-file-ignores pyproject needs."""
    above = complexities(MAX_COMPLEXITY)
    BASELINE_PATH.write_text(json.dumps(above, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {BASELINE_PATH.relative_to(ROOT)}: {len(above)} functions above 15")
    print("pyproject.toml [tool.ruff.lint.per-file-ignores] must list exactly these jpo files:")
    for path in baseline_files(above):
        print(f'"{path}" = ["C901"]')


def baseline_files(baseline: dict[str, int]) -> list[str]:
    """Return the jpo files (relative paths) that hold a function of ``baseline``."""
    files = set()
    for path in product_files():
        names = {name for name, _node in _definitions(path)}
        if names & set(baseline):
            files.add(str(path.relative_to(ROOT)))
    return sorted(files)


# ---------------------------------------------------------------------------------- (d)
_PARSERS = {("tomllib", "load"), ("tomllib", "loads"), ("yaml", "safe_load"), ("yaml", "load")}


def _own_calls(function: ast.AST) -> Iterator[ast.Call]:
    """Yield the calls in ``function``'s body, not in the functions nested in it."""
    stack = list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Call):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def settings_loaders() -> list[str]:
    """Return the jpo functions that parse a settings file (TOML/YAML) themselves."""
    found = []
    for path in product_files():
        for name, node in _definitions(path):
            if isinstance(node, ast.ClassDef):
                continue
            if any(
                isinstance(call.func, ast.Attribute)
                and isinstance(call.func.value, ast.Name)
                and (call.func.value.id, call.func.attr) in _PARSERS
                for call in _own_calls(node)
            ):
                found.append(name)
    return found


# ---------------------------------------------------------------------------------- (e)
def duplicates(folder: Path, most: int = 10) -> str:
    """Return the ``duplicates`` command's report on ``folder`` (empty when not on PATH)."""
    tool = shutil.which("duplicates")
    if tool is None:
        return "duplicates: not on PATH"
    done = subprocess.run(
        [tool, "--repo", str(folder), "--most", str(most), "--seconds", "120"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


# ------------------------------------------------------------------------------ report
def main(argv: list[str] | None = None) -> int:
    """Print the metrics (or check cycles, or update the complexity baseline)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", action="store_true", help="(a) only; exit 1 on a cycle")
    parser.add_argument("--update-complexity-baseline", action="store_true")
    parser.add_argument("--top", type=int, default=10, help="rows of (c)")
    args = parser.parse_args(argv)
    if args.update_complexity_baseline:
        update_complexity_baseline()
        return 0
    cycles = import_cycles()
    print(f"(a) import cycles among jpo modules: {len(cycles)}")
    for component in cycles:
        print("    " + " <-> ".join(component))
    if args.cycles:
        return 1 if cycles else 0

    walk = walk_summary(suggest_walk())
    print(f"(b) suggest() walk: {walk['files']} files, {walk['stops']} stops; returns per file:")
    for where, count in walk["returns"].items():
        print(f"    {count:3d}  {where}")

    functions, classes = sizes()
    complexity = complexities()
    print(f"(c) {args.top} largest functions by lines:")
    for name, lines in functions[: args.top]:
        print(f"    {lines:5d}  {name}  (complexity {complexity.get(name, 1)})")
    print(f"    {args.top} largest classes by lines:")
    for name, lines in classes[: args.top]:
        print(f"    {lines:5d}  {name}")
    print(f"    {args.top} functions of highest mccabe complexity (ruff C901):")
    lines_of = dict(functions)
    ranked = sorted(complexity.items(), key=lambda item: (-item[1], item[0]))
    for name, value in ranked[: args.top]:
        print(f"    {value:5d}  {name}  ({lines_of.get(name, 0)} lines)")
    over = [name for name, value in complexity.items() if value > MAX_COMPLEXITY]
    print(f"    functions above {MAX_COMPLEXITY}: {len(over)}")

    loaders = settings_loaders()
    print(f"(d) settings loaders (functions parsing TOML/YAML themselves): {len(loaders)}")
    for name in loaders:
        print(f"    {name}")

    print("(e) duplicated blocks, jpo/:")
    print("    " + duplicates(PACKAGE).replace("\n", "\n    "))
    print("    whole tree:")
    print("    " + duplicates(ROOT).replace("\n", "\n    "))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
