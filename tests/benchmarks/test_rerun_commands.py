"""Every command of BENCHMARKS.md's "How to rerun everything" block runs, at a tiny size.

The block is parsed from BENCHMARKS.md itself, so a command added there without a tiny
size here fails (add it to :data:`TINY`), and a script whose flags or outputs drift from
what BENCHMARKS.md says fails here instead of rotting unseen. Sizes are shrunk flag by
flag (:data:`TINY`); output paths under ``/tmp/`` are redirected into a temporary folder
shared by the block's commands, which run in the block's order (a later ``score`` reads
what an earlier training exported). GPU-only commands skip when no CUDA GPU is present.
The commands share one oracle cache (``$JPO_ORACLE_CACHE``), so each workload's oracle is
searched once for the whole block, not once per command and variant.

``pytest -m rerun`` selects this tier; pyproject's ``addopts`` leaves it out of the default
run (54 min at load average 10-29 on 2 shared cores), so CI runs it as its own step. The
check that every command of the block has tiny sizes runs in the default (fast) tier.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jpo.sim.oracle import ORACLE_CACHE_ENV

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
HEADING = "## How to rerun everything"

TINY: dict[str, dict[str, str | None]] = {
    # script (or script + subcommand) -> flag: tiny value (None: a bare flag to add)
    "benchmarks/constraints/bench.py": {"--number": "200", "--repeats": "1"},
    "benchmarks/ingest/bench_ingest.py": {
        "--workloads": "2",
        "--hours": "1",
        "--repeats": "1",
        "--naive-workloads": "1",
    },
    "benchmarks/simulate/bench.py": {"--runs": "2", "--repeats": "1", "--seeds": "1"},
    "benchmarks/env/bench_env.py": {"--steps": "200", "--repeats": "1"},
    "benchmarks/train/bench.py": {
        "--steps": "20",
        "--warmup": "60",
        "--variants": "uniform_b64_1thread",
        "--repeats": "1",
    },
    "benchmarks/train/profile_rllib.py": {"--steps": "10", "--warmup": "60"},
    "benchmarks/train/continuous_live.py": {
        "--workloads": "1",
        "--rounds": "2",
        "--cycles": "1",
        "--budget-iterations": "1",
        "--run-wall-s": "8",
        "--episodes": "4",
        "--holdout": "xsum-bart",  # one held-out workload whose replays build in ~1 s
    },
    "benchmarks/train/continuous_cycles.py": {
        "--variants": "baseline",
        "--seeds": "0",
        "--cycles": "1",
        "--budget-iterations": "1",
        "--eval-episodes": "2",
        "--runs": "3",
        "--set": "reporting.min_sample_timesteps_per_iteration=100",
    },
    "benchmarks/suggest/bench_cold_suggest.py": {"--runs": "1"},
    "benchmarks/suggest/bench_incumbent.py": {"--records": "3", "--repeats": "2"},
    "benchmarks/serve/bench_serve_latency.py": {"--clients": "2", "--duration": "2"},
    "benchmarks/evaluate/run.py": {"--seeds": "1", "--rounds": "1"},
    "research/train/fast_sac.py": {
        "--steps": "300",
        "--set": "env.config.randomized_profiles=0",
    },
    "research/train/imitate.py": {
        "--iterations": "1",
        "--episodes": "4",
        "--epochs": "1",
        "--set": "env.config.randomized_profiles=0",
    },
    "research/evaluate/diagnose.py": {
        # global options (before the subcommand)
        "--profiles": "2",
        "--seeds": "1",
        "--holdout-seeds": "1",
    },
    "research/evaluate/diagnose.py ci-stage": {"--train-seeds": "1"},
    "research/evaluate/stage_shift.py": {
        "--seeds": "1",
        "--rounds": "2",
        "--limit": "1",
        "--frames": "frames",
    },
    "research/evaluate/diagnose.py score": {"--train-seeds": "1"},
    "research/evaluate/diagnose.py teacher": {"--train-seeds": "1"},
    "research/evaluate/diagnose.py greedy": {},
    "research/evaluate/diagnose.py regimes": {},
    "benchmarks/evaluate/digits_e2e.py": {"--repeats": "1", "--rounds": "1", "--short": None},
    "benchmarks/train/gpu_check.sh": {},
    "benchmarks/evaluate/make_testset.py": {"--out": "broad-v2"},
    "benchmarks/evaluate/bar.py": {
        "--seeds": "1",
        "--rounds": "1",
        "--sets": "holdout",
        "--part": "1/8",
        "--json": "bar.json",
        "--frames": "frames",
    },
}
"""Tiny sizes of each rerun command's flags (a flag absent from the command is added)."""

GPU_ONLY = {"benchmarks/train/gpu_check.sh": "needs a CUDA GPU (pytest -m gpu + bench_gpu.py)"}


def rerun_block(text: str) -> list[str]:
    """Return the shell commands of the "How to rerun everything" block (one per line)."""
    after = text.split(HEADING, 1)[1]
    block = after.split("```bash", 1)[1].split("```", 1)[0]
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if line and not line.startswith("source "):
            commands.append(line)
    return commands


def _script_of(words: list[str]) -> tuple[str, str | None]:
    """Return (script path, subcommand or None) of a ``python/bash script ...`` command."""
    i = next(i for i, w in enumerate(words) if w.startswith(("benchmarks/", "research/")))
    sub = next((w for w in words[i + 1 :] if not w.startswith("-")), None)
    return words[i], sub


def _shrink(words: list[str], sizes: dict[str, str | None]) -> list[str]:
    """Set each flag of ``sizes`` to its tiny value (replacing the value or adding it)."""
    out = list(words)
    for flag, value in sizes.items():
        if flag in out:
            i = out.index(flag)
            if value is None:
                continue
            # replace every value of the flag (nargs="+" too) by the tiny one
            j = i + 1
            while j < len(out) and not out[j].startswith("-"):
                j += 1
            if flag == "--set":
                out.insert(i, value)
                out.insert(i, flag)
            else:
                out[i + 1 : j] = [value]
        else:
            out += [flag] if value is None else [flag, value]
    return out


OUTPUT_FLAGS = ("--out", "--json", "--frames")
"""Flags naming a script's output: always redirected into the test's temporary folder."""


def tiny_command(command: str, tmp: Path) -> tuple[str, str | None]:
    """Return (the tiny shell command, why it is skipped or None)."""
    command = command.replace("/tmp/", f"{tmp}/")
    loop = re.match(r"for (\w+) in ([^;]+); do (.+); done$", command)
    body = loop.group(3) if loop else command
    words = shlex.split(body)
    script, sub = _script_of(words)
    if script in GPU_ONLY and not _has_cuda():
        return "", GPU_ONLY[script]
    key = f"{script} {sub}" if f"{script} {sub}" in TINY else script
    if key not in TINY:
        pytest.fail(f"{script}: a rerun command of BENCHMARKS.md without a tiny size in TINY")
    sizes = dict(TINY.get(script, {}))
    if key != script and sub is not None:  # key names a subcommand
        sub_at = words.index(sub, words.index(script) + 1)
        head = [*_shrink(words[:sub_at], sizes), words[sub_at]]
        words = head + _shrink(words[sub_at + 1 :], TINY[key])
    else:
        words = _shrink(words, sizes)
    words = [sys.executable if w == "python" else w for w in words]
    for flag in OUTPUT_FLAGS:  # results files of the repo stay as measured: write into tmp
        if flag in words:
            i = words.index(flag) + 1
            words[i] = str(tmp / Path(words[i]).name)
    # quote only what the shell would split; keep $vars and globs for the shell
    text = " ".join(w if re.fullmatch(r"[\w@%+=:,./*$-]+", w) else shlex.quote(w) for w in words)
    if loop:  # one pass of the loop is enough to show it runs
        first = loop.group(2).split()[0]
        text = f"{loop.group(1)}={first}; {text}"
    return text, None


def _has_cuda() -> bool:
    return shutil.which("nvidia-smi") is not None


COMMANDS = rerun_block(BENCHMARKS_MD.read_text(encoding="utf-8"))


def test_the_block_is_found_and_every_script_has_a_tiny_size() -> None:
    assert len(COMMANDS) >= 10
    for command in COMMANDS:
        loop = re.match(r"for (\w+) in ([^;]+); do (.+); done$", command)
        script, sub = _script_of(shlex.split(loop.group(3) if loop else command))
        assert script in TINY or f"{script} {sub}" in TINY, script
        assert (REPO / script).is_file(), f"BENCHMARKS.md names a missing script {script}"


@pytest.fixture(scope="module")
def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the whole block: later commands read what earlier ones wrote."""
    return tmp_path_factory.mktemp("rerun")


@pytest.mark.slow
@pytest.mark.rerun
@pytest.mark.parametrize("command", COMMANDS, ids=[f"{i:02d}" for i in range(len(COMMANDS))])
def test_rerun_command_runs_at_a_tiny_size(command: str, shared_tmp: Path) -> None:
    text, skip = tiny_command(command, shared_tmp)
    if skip:
        pytest.skip(skip)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "JPO_BENCH_TMP": str(shared_tmp),
        # one oracle search per workload for the whole block (the evaluations, diagnose.py's
        # variants and the trainers' teachers search the same workloads): jpo.sim.oracle;
        # scripts/test.sh sets one folder for every tier
        ORACLE_CACHE_ENV: os.environ.get(ORACLE_CACHE_ENV) or str(shared_tmp / "oracle-cache"),
    }
    proc = subprocess.run(
        ["bash", "-c", text],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,  # under pytest's 900 s per test; the slowest (diagnose.py score) ran
        # ~9.5 min at load average 28 on 2 shared cores (2026-12-06)
    )
    assert proc.returncode == 0, f"{text}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
