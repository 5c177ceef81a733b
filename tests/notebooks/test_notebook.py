"""Execute notebooks/evaluate_checkpoint.ipynb top to bottom on a tiny policy artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes.policy import random_policy
from fakes.training import train_tiny

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "evaluate_checkpoint.ipynb"


def _tiny_policy(folder: Path) -> Path:
    return random_policy(
        folder,
        seed=1,
        hidden=8,
        activation="tanh",
        version=3,
        note="tiny random artifact for the notebook test",
    )


def _execute(tmp_path: Path) -> Any:
    """Run the notebook in ``tmp_path`` (settings from the environment); return it, executed."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    return nb


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = _tiny_policy(tmp_path / "policy")
    out = tmp_path / "out"
    monkeypatch.setenv("JPO_NOTEBOOK_POLICY", str(policy))
    monkeypatch.setenv("JPO_NOTEBOOK_WORKLOADS", "mnist-lenet,higgs-mlp")
    monkeypatch.setenv("JPO_NOTEBOOK_ROUNDS", "2")
    monkeypatch.setenv("JPO_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = _execute(tmp_path)
    assert (out / "report.md").is_file()
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert plots == [
        "gain_by_workload.png",  # issue 29: the per-workload small multiples
        "gain_vs_round.png",
        "utilization_before_after.png",
        "val_loss_vs_round.png",
    ]
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) == len(plots)  # the notebook shows every plot the report drew
    text = "".join(
        str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c["outputs"]
    )
    assert "version 3" in text and "2 workloads" in text


@pytest.mark.slow
def test_notebook_checkpoint_route_exports_and_evaluates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    config = train_tiny(tmp_path / "train", iterations=1)
    (ckpt,) = sorted((tmp_path / "train" / "store" / "checkpoints").iterdir())
    out = tmp_path / "out"
    monkeypatch.delenv("JPO_NOTEBOOK_POLICY", raising=False)
    monkeypatch.setenv("JPO_NOTEBOOK_CHECKPOINT", str(ckpt))
    # only the checkpoint, as a user gives it: its recorded config describes the run
    monkeypatch.delenv("JPO_NOTEBOOK_TRAIN_CONFIG", raising=False)
    monkeypatch.setenv("JPO_NOTEBOOK_WORKLOADS", "mnist-lenet")
    monkeypatch.setenv("JPO_NOTEBOOK_ROUNDS", "1")
    monkeypatch.setenv("JPO_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    _execute(tmp_path)
    manifest = json.loads((out / "exported-policy" / "manifest.json").read_text())
    assert manifest["source"]["checkpoint"] == str(ckpt)
    assert manifest["training_data"]["iterations"] == 1
    # the tiny run's own values (configs/train.yaml says episode_length 8, seed 0)
    tiny = yaml.safe_load(config.read_text())
    assert manifest["training_data"]["episode_length"] == tiny["env"]["config"]["episode_length"]
    assert manifest["source"]["seed"] == tiny["seed"]
    assert (out / "report.md").is_file()
