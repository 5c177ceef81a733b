"""The example CI pipelines (examples/ci/): parsed as YAML and checked for what JPO relies on.

Stage order (suggest -> train -> feedback), a concurrency group per workload file, the
documented `jpo suggest` exit codes each handled, and only `jpo` subcommands and flags that
the CLI contract documents (docs/maintainer-guide.md, issue 7). The CLI is not imported.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from jpo.errors import ExitCode

REPO = Path(__file__).resolve().parents[1]
GITHUB = REPO / "examples" / "ci" / "github-actions.yml"
GITLAB = REPO / "examples" / "ci" / "gitlab-ci.yml"
CONFIG = "path/to/config.ini"

# The CI-facing subcommands and their documented flags (issue 7: `jpo suggest` with
# --prometheus/--endpoint/--policy/--dry-run/--log/--json/--approve; `jpo feedback --config
# --run-id`, which fetches from Prometheus and writes the audit log like suggest).
DOCUMENTED_FLAGS = {
    "check": {"--config"},
    "suggest": {
        "--config",
        "--prometheus",
        "--endpoint",
        "--policy",
        "--dry-run",
        "--log",
        "--json",
        "--approve",
    },
    "feedback": {"--config", "--run-id", "--prometheus", "--log"},
}


def load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict), f"{path}: expected a YAML mapping"
    return data


def jpo_calls(script: str) -> list[tuple[str, set[str]]]:
    """Return (subcommand, long flags) for every `jpo ...` command line in a shell script."""
    joined = re.sub(r"\\\n", " ", script)
    calls = []
    for line in joined.splitlines():
        line = line.strip()
        if not line.startswith("jpo "):
            continue
        words = shlex.split(line, comments=True)
        flags = {w.split("=")[0] for w in words[2:] if w.startswith("--")}
        calls.append((words[1], flags))
    return calls


def case_branches(script: str) -> dict[int, str]:
    """Map each exit code named in the script's `case "$rc"` to the text of its branch."""
    body = script[script.index('case "$rc" in') : script.index("esac")]
    branches: dict[int, str] = {}
    for patterns, action in re.findall(r"^\s*([\d|*]+)\)(.*?);;", body, flags=re.S | re.M):
        for pattern in patterns.split("|"):
            key = -1 if pattern == "*" else int(pattern)
            branches[key] = action
    return branches


def exits(branch: str) -> bool:
    """Return whether a case branch runs an `exit` statement (not just mentions the word)."""
    return re.search(r"(?:^|[;&|]|then)\s*exit\b", branch, flags=re.M) is not None


def assert_exit_codes_handled(branches: dict[int, str], approval: str) -> None:
    documented = {c.value for c in ExitCode}
    assert set(branches) - {-1} <= documented, "a branch handles an undocumented exit code"
    assert "changed" in branches[ExitCode.OK]
    assert not exits(branches[ExitCode.OK])
    for code in (ExitCode.UNCHANGED_BY_CHOICE, ExitCode.UNCHANGED_NO_DATA):
        assert "unchanged" in branches[code] and not exits(branches[code]), code
    assert approval in branches[ExitCode.NEEDS_APPROVAL]
    for code in (ExitCode.INVALID_INPUT, ExitCode.VALIDATION_FAILED):
        assert re.search(r"exit \"?\$rc\"?", branches[code]), f"exit {code} must fail the stage"
    assert re.search(r"exit \"?\$rc\"?", branches[-1]), "other codes must fail the stage"


def assert_documented_commands(scripts: list[str]) -> set[str]:
    used = set()
    for script in scripts:
        for sub, flags in jpo_calls(script):
            assert sub in DOCUMENTED_FLAGS, f"`jpo {sub}` is not a documented subcommand"
            assert flags <= DOCUMENTED_FLAGS[sub], f"jpo {sub}: {flags - DOCUMENTED_FLAGS[sub]}"
            assert "--config" in flags, f"jpo {sub} without --config"
            used.add(sub)
    return used


def test_ci_subcommands_are_in_the_architecture_contract() -> None:
    text = (REPO / "docs" / "maintainer-guide.md").read_text(encoding="utf-8")
    for module in ("jpo/stage/suggest.py", "jpo/stage/feedback.py", "check_workload"):
        assert module in text, f"docs/maintainer-guide.md no longer mentions {module}"


# ------------------------------------------------------------------ GitHub Actions


@pytest.fixture(scope="module")
def github() -> dict[str, Any]:
    return load(GITHUB)


def needs(job: dict[str, Any]) -> list[str]:
    value = job.get("needs", [])
    return [value] if isinstance(value, str) else list(value)


def run_scripts(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in job.get("steps", []) if "run" in step]


def test_github_concurrency_group_serializes_pipelines_on_one_file(github: dict[str, Any]) -> None:
    concurrency = github["concurrency"]
    assert CONFIG in concurrency["group"]
    assert concurrency["cancel-in-progress"] is False, "a queued run must wait, not cancel"
    assert github["env"]["JPO_CONFIG"] == CONFIG


def test_github_jobs_run_suggest_then_train_then_feedback(github: dict[str, Any]) -> None:
    jobs = github["jobs"]
    assert needs(jobs["suggest"]) == []
    assert needs(jobs["approve"]) == ["suggest"]
    assert "needs-approval" in jobs["approve"]["if"]
    assert jobs["approve"]["environment"], "approval waits on a protected environment"
    assert {"suggest", "approve"} <= set(needs(jobs["train"]))
    assert "train" in needs(jobs["feedback"])
    assert "always()" in jobs["feedback"]["if"], "feedback also after a failed training run"
    # The commit job records the campaign state after feedback, whatever the run did: a
    # degraded run's values are committed with the log that makes the next suggest roll
    # them back (examples/ci/README.md, "State between pipelines").
    assert {"train", "feedback"} <= set(needs(jobs["commit"]))
    assert "needs.feedback.result == 'success'" in jobs["commit"]["if"]


def test_github_suggest_handles_every_documented_exit_code(github: dict[str, Any]) -> None:
    (script,) = [s for s in run_scripts(github["jobs"]["suggest"]) if "jpo suggest" in s]
    assert script.lstrip().startswith("set +e"), "the exit code must be captured, not fatal"
    assert_exit_codes_handled(case_branches(script), approval="needs-approval")


def test_github_hands_config_ini_from_suggest_to_train(github: dict[str, Any]) -> None:
    jobs = github["jobs"]
    uploads = [s for s in jobs["suggest"]["steps"] if "upload-artifact" in s.get("uses", "")]
    assert uploads and "JPO_CONFIG" in uploads[0]["with"]["path"]
    name = uploads[0]["with"]["name"]
    for job in ("train", "feedback", "commit"):
        downloads = [s for s in jobs[job]["steps"] if "download-artifact" in s.get("uses", "")]
        assert downloads and downloads[0]["with"]["name"] == name, job


def test_github_uses_only_documented_jpo_commands(github: dict[str, Any]) -> None:
    scripts = [s for job in github["jobs"].values() for s in run_scripts(job)]
    used = assert_documented_commands(scripts)
    assert used == {"suggest", "feedback"}
    approve = " ".join(run_scripts(github["jobs"]["approve"]))
    assert "--approve" in approve


def test_github_workflow_triggers(github: dict[str, Any]) -> None:
    # YAML 1.1 reads the bare key `on` as True; GitHub reads it as "on".
    triggers = github.get("on", github.get(True))
    assert triggers and "push" in triggers


# ------------------------------------------------------------------ GitLab CI


@pytest.fixture(scope="module")
def gitlab() -> dict[str, Any]:
    return load(GITLAB)


def test_gitlab_stages_are_in_order(gitlab: dict[str, Any]) -> None:
    stages = gitlab["stages"]
    order = [stages.index(s) for s in ("jpo", "suggest", "train", "feedback")]
    assert order == sorted(order)
    assert gitlab["jpo-suggest"]["stage"] == "suggest"
    assert gitlab["train"]["stage"] == "train"
    assert gitlab["jpo-feedback"]["stage"] == "feedback"
    assert gitlab["train"]["needs"] == ["jpo-suggest"]
    assert set(gitlab["jpo-feedback"]["needs"]) == {"jpo-suggest", "train"}
    assert gitlab["jpo-feedback"]["rules"][0]["when"] == "always"
    assert gitlab["variables"]["JPO_CONFIG"] == CONFIG


def test_gitlab_resource_group_holds_the_whole_chain(gitlab: dict[str, Any]) -> None:
    parent = gitlab["jpo-pipeline"]
    assert parent["resource_group"]
    assert parent["trigger"]["strategy"] == "depend", "the group is held until the child ends"
    assert parent["trigger"]["include"] == ".gitlab-ci.yml"
    assert "!=" in parent["rules"][0]["if"]
    # Every child job runs only inside the child pipeline, and none takes the same resource
    # group (it would wait on its own parent forever).
    for name, job in gitlab.items():
        if not isinstance(job, dict) or "script" not in job:
            continue
        assert "resource_group" not in job, name
        rules = job.get("rules") or gitlab[".child"]["rules"]
        assert '== "parent_pipeline"' in rules[0]["if"], name
        assert job["extends"] in {".child", ".jpo"}, name


def test_gitlab_suggest_handles_every_documented_exit_code(gitlab: dict[str, Any]) -> None:
    (script,) = gitlab["jpo-suggest"]["script"]
    assert_exit_codes_handled(case_branches(script), approval="JPO_APPROVE=true")
    assert "exit 12" in case_branches(script)[ExitCode.NEEDS_APPROVAL], "approval stops here"
    artifacts = gitlab["jpo-suggest"]["artifacts"]
    assert "$JPO_CONFIG" in artifacts["paths"]
    assert artifacts["reports"]["dotenv"] == "jpo.env"


def test_gitlab_uses_only_documented_jpo_commands(gitlab: dict[str, Any]) -> None:
    scripts = [
        line for job in gitlab.values() if isinstance(job, dict) for line in job.get("script", [])
    ]
    assert assert_documented_commands(scripts) == {"suggest", "feedback"}


# ------------------------------------------------------------------ state between pipelines

COMMIT_SCRIPT = "examples/ci/jpo-commit-state.sh"


def test_audit_log_lives_beside_config_ini_in_both_pipelines(
    github: dict[str, Any], gitlab: dict[str, Any]
) -> None:
    from jpo.stage.workspace import Workspace

    expected = Workspace(Path(CONFIG).parent).audit_log.as_posix()
    assert github["env"]["JPO_LOG"] == expected
    assert gitlab["variables"]["JPO_LOG"] == expected


def test_github_commits_config_and_audit_log_together(github: dict[str, Any]) -> None:
    jobs = github["jobs"]
    (script,) = run_scripts(jobs["commit"])
    assert f'bash {COMMIT_SCRIPT} "$JPO_CONFIG" "$JPO_LOG"' in script
    # the artifact the commit job takes is the one feedback re-uploaded, log included
    uploads = [s for s in jobs["feedback"]["steps"] if "upload-artifact" in s.get("uses", "")]
    assert uploads[-1]["with"]["overwrite"] is True
    assert {"${{ env.JPO_CONFIG }}", "${{ env.JPO_LOG }}"} <= set(
        line.strip() for line in uploads[-1]["with"]["path"].splitlines()
    )
    # both files share the folder path/to: downloads extract there (the artifact's root)
    for job in ("train", "feedback", "commit", "approve"):
        downloads = [s for s in jobs[job]["steps"] if "download-artifact" in s.get("uses", "")]
        assert downloads[0]["with"]["path"] == "${{ env.JPO_DIR }}", job
    assert github["env"]["JPO_DIR"] == str(Path(CONFIG).parent)


def test_gitlab_commits_config_and_audit_log_together(gitlab: dict[str, Any]) -> None:
    commit = gitlab["jpo-commit"]
    assert commit["needs"] == ["jpo-feedback"]
    assert commit["rules"][0]["when"] == "always"
    assert f'bash {COMMIT_SCRIPT} "$JPO_CONFIG" "$JPO_LOG"' in commit["script"][0]
    assert {"$JPO_CONFIG", "$JPO_LOG"} <= set(gitlab["jpo-feedback"]["artifacts"]["paths"])


def test_commit_script_is_valid_bash() -> None:
    import subprocess

    done = subprocess.run(
        ["bash", "-n", str(REPO / COMMIT_SCRIPT)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
