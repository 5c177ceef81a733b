"""Research never patches product modules and imports no private name from jpo (issue 28).

Scans every Python file under research/ (and benchmarks/, which measure the product as
shipped) with ``ast``: an assignment (plain, augmented,
annotated, or a deletion) to an attribute of a name bound to a jpo module, a
``setattr``/``monkeypatch.setattr`` whose target is a jpo module, or an import of a
``_private`` name from jpo fails, naming the file and line. Research plugs into
``jpo.evaluation.evaluate.evaluate``'s keyword arguments instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RESEARCH = Path(__file__).resolve().parents[1]
REPO = RESEARCH.parent
FILES = sorted([*RESEARCH.rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")])


def _jpo_module_names(tree: ast.Module) -> set[str]:
    """Return local names bound to jpo modules (``import jpo.x as m``, ``from jpo import m``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "jpo" or alias.name.startswith("jpo."):
                    names.add(alias.asname or alias.name.split(".")[0])
        elif _from_jpo(node):
            for alias in node.names:  # type: ignore[attr-defined]
                # `from jpo.evaluation import evaluate` binds a module; a class or function
                # bound this way is not a module, but patching its attributes is as bad
                names.add(alias.asname or alias.name)
    return names


def _from_jpo(node: ast.AST) -> bool:
    """Tell whether ``node`` is an absolute ``from jpo... import ...``."""
    if not isinstance(node, ast.ImportFrom) or not node.module or node.level != 0:
        return False
    return node.module == "jpo" or node.module.startswith("jpo.")


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def problems(source: str, filename: str = "<src>") -> list[str]:
    """Return one line per patch of a jpo module or private jpo import in ``source``."""
    tree = ast.parse(source, filename)
    modules = _jpo_module_names(tree)
    found: list[str] = []

    def targets(node: ast.AST) -> list[ast.expr]:
        if isinstance(node, ast.Assign):
            return list(node.targets)
        if isinstance(node, ast.AugAssign | ast.AnnAssign):
            return [node.target]
        if isinstance(node, ast.Delete):
            return list(node.targets)
        return []

    def flat(target: ast.expr) -> list[ast.expr]:
        if isinstance(target, ast.Tuple | ast.List):
            return [t for e in target.elts for t in flat(e)]
        return [target]

    for node in ast.walk(tree):
        for target in (t for raw in targets(node) for t in flat(raw)):
            if isinstance(target, ast.Attribute) and _root(target) in modules:
                found.append(f"{filename}:{node.lineno}: assigns {ast.unparse(target)}")
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("setattr", "delattr") and node.args:
                first = node.args[0]
                text = ast.unparse(first)
                if _root(first) in modules or text.strip("'\"").startswith("jpo"):
                    found.append(f"{filename}:{node.lineno}: {name} on {text}")
        if isinstance(node, ast.ImportFrom) and _from_jpo(node):
            module = str(node.module)
            if any(part.startswith("_") for part in module.split(".")):
                found.append(f"{filename}:{node.lineno}: imports private {module}")
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{filename}:{node.lineno}: imports private {module}.{alias.name}")
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("jpo.") and any(
                    p.startswith("_") for p in alias.name.split(".")
                ):
                    found.append(f"{filename}:{node.lineno}: imports private {alias.name}")
    return found


def test_research_has_python_files() -> None:
    assert any(f.name == "diagnose.py" for f in FILES)


@pytest.mark.parametrize("path", FILES, ids=[str(f.relative_to(REPO)) for f in FILES])
def test_no_research_file_patches_jpo_or_imports_a_private_name(path: Path) -> None:
    assert problems(path.read_text(encoding="utf-8"), str(path)) == []


@pytest.mark.parametrize(
    "source",
    [
        "import jpo.stage.suggest as s\ns.load_suggest_settings = lambda: 1\n",
        "import jpo.evaluation.evaluate\njpo.evaluation.evaluate.jpo_proposer = None\n",
        "from jpo.policy import source\nsource.LocalPolicySource = object\n",
        "import jpo.policy.source as ps\n(a, ps.LocalPolicySource) = (1, 2)\n",
        "import jpo.sim as sim\nsetattr(sim, 'x', 1)\n",
        "def t(monkeypatch):\n    monkeypatch.setattr('jpo.stage.suggest.load', 1)\n",
        "import jpo.evaluation.evaluate as e\ndef t(monkeypatch):\n"
        "    monkeypatch.setattr(e, 'jpo_proposer', 1)\n",
        "from jpo.evaluation.evaluate import _bundled_policy\n",
        "from jpo.train.trainer import make_env, _make_env\n",
    ],
)
def test_the_scan_catches_each_kind_of_patch(source: str) -> None:
    assert problems(source)


def test_the_scan_lets_plug_ins_and_public_imports_pass() -> None:
    ok = (
        "from jpo.evaluation.evaluate import evaluate, jpo_proposer\n"
        "import jpo.sim  # registers the env\n"
        "class Wrapper:\n    def __init__(self):\n        self.policy = None\n"
        "evaluate(settings, propose=jpo_proposer(p))\n"
    )
    assert problems(ok) == []
