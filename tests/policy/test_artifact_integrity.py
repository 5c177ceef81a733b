"""Tampered, forged, escaping, oversize and truncated policy artifacts (issue 26, item 4).

Each case starts from a copy of the bundled policy and breaks one thing. It is run three
ways: ``LocalPolicy.load`` (PolicyError naming the fault), ``jpo.serving.api.PolicyService``
(the same PolicyError, never another exception), and the real CLI in-process
(``jpo suggest --policy``, telemetry from the project's FakeSource): exit 5, one line on
stderr, config.ini byte-identical and no audit record. "Forged" cases recompute the seal
(``artifact_sha256``) as a forger would, so only the field checks stand in their way;
"tampered" cases edit without re-sealing and must fail on the seal.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes.suggest_campaign import CONFIG, HP, FakeSource

from jpo.errors import ExitCode, PolicyError
from jpo.policy.artifact import (
    LATEST_FILE,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    ArtifactLimits,
    LocalPolicy,
    file_sha256,
    manifest_seal,
)
from jpo.serving.api import PolicyService

BUNDLED = Path(__file__).parents[2] / "jpo" / "data" / "policy"

Raw = dict[str, Any]

# ---------------------------------------------------------------- opened-file recorder

_OPENED: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _OPENED is not None and args and isinstance(args[0], str | bytes):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def _opened_during(fn: Callable[[], Any]) -> list[str]:
    """Return the paths ``fn`` opened (``open`` audit events), swallowing PolicyError."""
    global _OPENED
    _OPENED = []
    try:
        fn()
    except PolicyError:
        pass
    finally:
        opened, _OPENED = _OPENED, None
    return opened


# ---------------------------------------------------------------- artifact builders


def _copy(tmp: Path) -> Path:
    folder = tmp / "policy"
    shutil.copytree(BUNDLED, folder)
    return folder


def _raw(folder: Path) -> Raw:
    data: Raw = json.loads((folder / MANIFEST_FILE).read_text())
    return data


def _write(folder: Path, raw: Raw, *, seal: bool) -> None:
    if seal:
        raw = {k: v for k, v in raw.items() if k != "artifact_sha256"}
        raw["artifact_sha256"] = manifest_seal(raw)
    (folder / MANIFEST_FILE).write_text(json.dumps(raw, indent=2))


def _edit(mutate: Callable[[Raw], None], *, seal: bool) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        folder = _copy(tmp)
        raw = _raw(folder)
        mutate(raw)
        _write(folder, raw, seal=seal)
        return folder

    return build


def _swap(raw: Raw, part: str, i: int, j: int) -> None:
    names = raw[part]["names"]
    names[i], names[j] = names[j], names[i]


def _set(path: str, value: Any) -> Callable[[Raw], None]:
    def mutate(raw: Raw) -> None:
        *parents, leaf = path.split(".")
        node = raw
        for p in parents:
            node = node[p]
        node[leaf] = value

    return mutate


def _set_entry(part: str, key: str, i: int, value: Any) -> Callable[[Raw], None]:
    def mutate(raw: Raw) -> None:
        raw[part][key][i] = value

    return mutate


FIELD_CASES: dict[str, tuple[Callable[[Raw], None], str]] = {
    "action-names-swapped": (lambda r: _swap(r, "action", 0, 3), "out of order"),
    "action-name-unknown": (_set_entry("action", "names", 2, "dropout"), "not tunable"),
    "action-names-duplicate": (_set_entry("action", "names", 1, "batch_size"), "unique"),
    "observation-names-swapped": (lambda r: _swap(r, "observation", 0, 4), "observation.names"),
    "mean-1e6": (_set_entry("observation", "mean", 3, 1e6), "mean"),
    "std-1e-300": (_set_entry("observation", "std", 5, 1e-300), "std"),
    "std-huge": (_set_entry("observation", "std", 5, 1e30), "std"),
    "clip-inverted": (_set("observation.clip_low", 2e6), "clip"),
    "action-bounds-100": (
        lambda r: (_set("action.low", -100.0)(r), _set("action.high", 100.0)(r)),
        "leave [-1, 1]",
    ),
    "action-low-above-high": (
        lambda r: (_set("action.low", 0.5)(r), _set("action.high", -0.5)(r)),
        "below",
    ),
    "format-version-true": (_set("format_version", True), "format_version True"),
    "format-version-float": (_set("format_version", 2.0), "format_version 2.0"),
    "policy-version-zero": (_set("policy_version", 0), "policy_version"),
    "policy-version-negative": (_set("policy_version", -3), "policy_version"),
    "policy-version-true": (_set("policy_version", True), "policy_version"),
    "policy-version-string": (_set("policy_version", "5"), "policy_version"),
    "weights-sha-not-hex": (_set("weights_sha256", "../../etc/passwd"), "weights_sha256"),
}


def _overflowing(literal: str) -> Callable[[Path], Path]:
    """A manifest whose action.high is ``literal`` (1e400 parses as inf; NaN is not JSON)."""

    def build(tmp: Path) -> Path:
        folder = _copy(tmp)
        raw = _raw(folder)
        raw["action"]["high"] = 0.123456789
        _write(folder, raw, seal=True)
        path = folder / MANIFEST_FILE
        path.write_text(path.read_text().replace("0.123456789", literal))
        return folder

    return build


def _weights_elsewhere(tmp: Path, name: str) -> Path:
    folder = _copy(tmp)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    shutil.move(str(folder / WEIGHTS_FILE), elsewhere / WEIGHTS_FILE)
    raw = _raw(folder)
    raw["weights_file"] = name.replace("ELSEWHERE", str(elsewhere))
    _write(folder, raw, seal=True)
    return folder


def _weights_symlink_out(tmp: Path) -> Path:
    folder = _copy(tmp)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    shutil.move(str(folder / WEIGHTS_FILE), elsewhere / WEIGHTS_FILE)
    (folder / WEIGHTS_FILE).symlink_to(elsewhere / WEIGHTS_FILE)
    return folder


def _manifest_symlink_out(tmp: Path) -> Path:
    folder = _copy(tmp)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    shutil.move(str(folder / MANIFEST_FILE), elsewhere / MANIFEST_FILE)
    (folder / MANIFEST_FILE).symlink_to(elsewhere / MANIFEST_FILE)
    return folder


def _latest(target: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        root = tmp / "versions"
        root.mkdir()
        shutil.copytree(BUNDLED, root / "v000001")
        elsewhere = tmp / "elsewhere"
        shutil.copytree(BUNDLED, elsewhere)
        (root / LATEST_FILE).write_text(target.replace("ELSEWHERE", str(elsewhere)) + "\n")
        return root

    return build


def _latest_symlink_out(tmp: Path) -> Path:
    root = tmp / "versions"
    root.mkdir()
    shutil.copytree(BUNDLED, root / "v000001")
    secret = tmp / "secret.txt"
    secret.write_text("v000001\n")
    (root / LATEST_FILE).symlink_to(secret)
    return root


def _version_symlink_out(tmp: Path) -> Path:
    root = tmp / "versions"
    root.mkdir()
    shutil.copytree(BUNDLED, tmp / "elsewhere")
    (root / "v000009").symlink_to(tmp / "elsewhere")
    return root


def _big_manifest(tmp: Path) -> Path:
    return _edit(lambda r: r["training_data"].update(pad="x" * (2 << 20)), seal=True)(tmp)


def _deep_manifest(depth: int) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        folder = _copy(tmp)
        text = '{"format_version": 2, "x": ' + "[" * depth + "]" * depth + "}"
        (folder / MANIFEST_FILE).write_text(text)
        return folder

    return build


def _npy_bytes(header: dict[str, Any], payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def _rewrite_npz(folder: Path, members: dict[str, bytes]) -> None:
    """Replace policy.npz by ``members`` (name -> .npy bytes) and re-seal like a forger."""
    with zipfile.ZipFile(folder / WEIGHTS_FILE, "w") as zf:
        for name, data in members.items():
            zf.writestr(f"{name}.npy", data)
    _reseal_weights(folder)


def _reseal_weights(folder: Path) -> None:
    raw = _raw(folder)
    raw["weights_sha256"] = file_sha256(folder / WEIGHTS_FILE)
    _write(folder, raw, seal=True)


def _npz_members(folder: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(folder / WEIGHTS_FILE) as zf:
        return {i.filename[:-4]: zf.read(i) for i in zf.infolist()}


def _huge_array(tmp: Path) -> Path:
    folder = _copy(tmp)
    members = _npz_members(folder)
    header = {"descr": "<f4", "fortran_order": False, "shape": (2**50,)}
    members["l0.weight"] = _npy_bytes(header, b"\0" * 64)
    _rewrite_npz(folder, members)
    return folder


def _object_array(tmp: Path) -> Path:
    folder = _copy(tmp)
    members = _npz_members(folder)
    header = {"descr": "|O", "fortran_order": False, "shape": (1,)}
    members["l0.bias"] = _npy_bytes(header, b"\x80\x04N.")
    _rewrite_npz(folder, members)
    return folder


def _truncated_npz(tmp: Path) -> Path:
    folder = _copy(tmp)
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    _reseal_weights(folder)
    return folder


def _short_member(tmp: Path) -> Path:
    folder = _copy(tmp)
    members = _npz_members(folder)
    members["l2.weight"] = members["l2.weight"][:-40]  # header intact, data cut short
    _rewrite_npz(folder, members)
    return folder


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    **{
        f"forged-{name}": (_edit(mutate, seal=True), fragment)
        for name, (mutate, fragment) in FIELD_CASES.items()
    },
    **{
        f"tampered-{name}": (_edit(mutate, seal=False), "artifact_sha256")
        for name, (mutate, _) in FIELD_CASES.items()
        if not name.startswith("format-version")  # the format is checked before the seal
    },
    "action-high-1e400": (_overflowing("1e400"), "checksum"),
    "action-high-NaN": (_overflowing("NaN"), "not valid JSON"),
    "tampered-seal-removed": (_edit(lambda r: r.pop("artifact_sha256"), seal=False), "sha256"),
    "weights-file-dotdot": (
        lambda t: _weights_elsewhere(t, "../elsewhere/policy.npz"),
        "weights_file",
    ),
    "weights-file-absolute": (
        lambda t: _weights_elsewhere(t, "ELSEWHERE/policy.npz"),
        "weights_file",
    ),
    "weights-file-symlink-out": (_weights_symlink_out, "links out of the folder"),
    "manifest-symlink-out": (_manifest_symlink_out, "outside the artifact folder"),
    "latest-dotdot": (_latest("../elsewhere"), "not a subfolder"),
    "latest-absolute": (_latest("ELSEWHERE"), "not a subfolder"),
    "latest-etc-passwd": (_latest("/etc/passwd"), "not a subfolder"),
    "latest-symlink-out": (_latest_symlink_out, "link out of"),
    "version-folder-symlink-out": (_version_symlink_out, "holds no policy artifact"),
    "manifest-over-size-limit": (_big_manifest, "limit"),
    "manifest-nested-100000-deep": (_deep_manifest(100_000), "nested more than"),
    "manifest-nested-50000-deep": (_deep_manifest(50_000), "nested more than"),
    "npz-member-2**50-elements": (_huge_array, "declares"),
    "npz-member-object-dtype": (_object_array, "only float arrays"),
    "npz-truncated": (_truncated_npz, "truncated or not an npz"),
    "npz-member-data-cut-short": (_short_member, "cannot read policy weights"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_local_policy_refuses_with_a_clear_error(name: str, tmp_path: Path) -> None:
    build, fragment = CASES[name]
    path = build(tmp_path)
    with pytest.raises(PolicyError) as err:
        LocalPolicy.load(path)
    message = str(err.value)
    assert fragment in message, message
    assert "\n" not in message


@pytest.mark.parametrize("name", sorted(CASES))
def test_policy_service_raises_only_policy_error(name: str, tmp_path: Path) -> None:
    path = CASES[name][0](tmp_path)
    with pytest.raises(PolicyError):
        PolicyService(path)


@pytest.mark.parametrize(
    "name", ["weights-file-absolute", "latest-etc-passwd", "latest-symlink-out"]
)
def test_escaping_paths_are_refused_before_the_target_is_opened(name: str, tmp_path: Path) -> None:
    path = CASES[name][0](tmp_path)
    opened = _opened_during(lambda: LocalPolicy.load(path))
    outside = [p for p in opened if not Path(p).resolve().is_relative_to(path.resolve())]
    assert not [p for p in outside if "elsewhere" in p or "passwd" in p or "secret" in p], opened


def test_size_limits_apply_before_reading(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    small = ArtifactLimits(max_weights_bytes=1000)
    with pytest.raises(PolicyError, match="over the 1000-byte limit"):
        LocalPolicy.load(folder, limits=small)
    with pytest.raises(PolicyError, match="holds 6 arrays, over the limit of 2"):
        LocalPolicy.load(folder, limits=ArtifactLimits(max_arrays=2))
    with pytest.raises(PolicyError, match="declares"):
        LocalPolicy.load(folder, limits=ArtifactLimits(max_array_elements=100))


def test_the_bundled_policy_is_sealed_and_loads(tmp_path: Path) -> None:
    raw = _raw(BUNDLED)
    assert raw["format_version"] == 2
    assert raw["artifact_sha256"] == manifest_seal(raw)
    assert LocalPolicy.load(BUNDLED).version == raw["policy_version"]


def test_a_format_1_artifact_names_the_reseal_command(tmp_path: Path) -> None:
    folder = _edit(lambda r: (r.pop("artifact_sha256"), r.update(format_version=1)), seal=False)(
        tmp_path
    )
    with pytest.raises(PolicyError, match=r"python -m jpo\.policy reseal"):
        LocalPolicy.load(folder)


# ---------------------------------------------------------------- the CLI: exit 5


CLI_CASES = [
    "forged-action-names-swapped",
    "forged-mean-1e6",
    "forged-std-1e-300",
    "forged-action-bounds-100",
    "forged-format-version-true",
    "forged-policy-version-zero",
    "tampered-action-name-unknown",
    "weights-file-dotdot",
    "weights-file-absolute",
    "latest-absolute",
    "manifest-nested-100000-deep",
    "npz-member-2**50-elements",
    "npz-truncated",
]


@pytest.mark.parametrize("name", CLI_CASES)
def test_jpo_suggest_exits_5_with_one_line_and_config_untouched(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from jpo.cli import app as cli
    from jpo.stage import run_telemetry

    app = tmp_path / "app"
    app.mkdir()
    config = app / "config.ini"
    config.write_text(CONFIG)
    source = FakeSource()
    source.add(HP, "run-1", val_loss=0.5)
    monkeypatch.setattr(run_telemetry, "prometheus_source", lambda *a, **k: source)
    policy = CASES[name][0](tmp_path)
    code = cli.main(["suggest", "--config", str(config), "--policy", str(policy), "--approve"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == ExitCode.POLICY, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert CASES[name][1] in lines[0]
    assert config.read_text() == CONFIG
    assert not (app / ".jpo" / "audit.jsonl").exists()
