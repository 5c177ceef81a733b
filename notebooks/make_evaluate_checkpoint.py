"""Write notebooks/evaluate_checkpoint.ipynb with nbformat (run this after editing cells).

python notebooks/make_evaluate_checkpoint.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

CELLS = [
    new_markdown_cell(
        """# Evaluate a JPO checkpoint or exported policy

This notebook loads a policy — an exported artifact folder (`manifest.json` + `policy.npz`)
or an RLlib SAC checkpoint, which it exports first — runs it on chosen catalog workloads
with the protocol of `jpo evaluate` (default config, then R rounds of suggest → simulated
run → feedback, against Optuna TPE, random search, no tuning and the oracle), and shows
the tables and plots.

Every setting in the next cell can also come from an environment variable (that is how
the test runs it on a tiny artifact)."""
    ),
    new_code_cell(
        """import os
from pathlib import Path

# An exported policy artifact (folder) or None for the bundled jpo/data/policy.
POLICY = os.environ.get("JPO_NOTEBOOK_POLICY") or None
# Or an RLlib checkpoint to export first (needs torch + ray): a checkpoint folder
# (<storage>/checkpoints/iter_NNNNNN) or a training storage folder (its latest checkpoint).
CHECKPOINT = os.environ.get("JPO_NOTEBOOK_CHECKPOINT") or None
# Not needed: the checkpoint records its config (jpo_train_config.json); only for older ones.
TRAIN_CONFIG = os.environ.get("JPO_NOTEBOOK_TRAIN_CONFIG") or None
# Workloads (comma separated catalog names); empty = the held-out split.
WORKLOADS = [w for w in os.environ.get("JPO_NOTEBOOK_WORKLOADS", "").split(",") if w]
ROUNDS = int(os.environ.get("JPO_NOTEBOOK_ROUNDS", "5"))
SEEDS = int(os.environ.get("JPO_NOTEBOOK_SEEDS", "1"))
# "suggest" drives the CI stage in-process; "direct" only features -> action -> constraints.
JPO_PATH = os.environ.get("JPO_NOTEBOOK_JPO_PATH", "suggest")
OUT = Path(os.environ.get("JPO_NOTEBOOK_OUT", "evaluation-notebook"))""",
        metadata={"tags": ["parameters"]},
    ),
    new_markdown_cell("## Load the policy"),
    new_code_cell(
        """from jpo.evaluation.evaluate import bundled_policy_path
from jpo.policy.artifact import LocalPolicy

if CHECKPOINT:
    from jpo.train.trainer import Storage, export_latest, load_train_config

    ckpt = Path(CHECKPOINT).resolve()
    is_storage = (ckpt / "checkpoints").is_dir()
    storage = Storage(str(ckpt if is_storage else ckpt.parent.parent))
    exported = export_latest(
        load_train_config(TRAIN_CONFIG),
        storage,
        OUT / "exported-policy",
        checkpoint=None if is_storage else str(ckpt),
    )
    POLICY = str(exported)
policy_path = POLICY or str(bundled_policy_path())
policy = LocalPolicy.load(policy_path)
manifest = policy.manifest
print(f"policy {policy.path}: version {policy.version}, "
      f"feature spec {manifest.feature_spec_version}, acts on {', '.join(policy.action_names)}")
manifest.training_data"""
    ),
    new_markdown_cell("## Run the evaluation"),
    new_code_cell(
        """from jpo.evaluation.evaluate import evaluate, load_evaluation_settings

settings = load_evaluation_settings().with_overrides(
    rounds=ROUNDS, seeds=SEEDS, jpo_path=JPO_PATH
)
result = evaluate(
    settings,
    workloads=WORKLOADS or None,
    policy=policy,
    policy_path=policy_path,
    progress=False,
)
frame = result.frame()
print(f"{len(result.workloads)} workloads, {len(frame)} rounds recorded")"""
    ),
    new_markdown_cell("## Overall, per method"),
    new_code_cell(
        """import pandas as pd
from IPython.display import Image, Markdown, display

from jpo.evaluation.evaluate import gain_by_round, method_summary, quality_bar, workload_summary

pd.set_option("display.precision", 3)
per_method = method_summary(result)
display(per_method[[
    "method", "oracle_fraction_mean", "val_loss_ok_share", "invalid_configs", "oom_runs",
    "gpu_util_before", "gpu_util_after", "throughput_before", "throughput_after",
    "gpu_hours_after", "tuning_gpu_hours",
]])
bar = quality_bar(result)
if bar is not None:
    display(Markdown("\\n".join(
        f"- **{'PASS' if ok else 'FAIL'}** {name}" for name, ok in bar.passed.items()
    )))"""
    ),
    new_markdown_cell("## Gain vs round, and per workload"),
    new_code_cell(
        """display(gain_by_round(result).pivot(index="round", columns="method",
                                   values="oracle_fraction"))
display(workload_summary(result)[[
    "workload", "method", "oracle_fraction", "val_loss_after", "default_val_loss",
    "gpu_util_before", "gpu_util_after", "invalid_configs", "oom_runs",
]])"""
    ),
    new_markdown_cell("## What the policy did, round by round"),
    new_code_cell(
        """hp_cols = ["hp_batch_size", "hp_learning_rate", "hp_num_layers", "hp_epochs"]
jpo_rounds = frame[frame["method"] == "jpo"][
    ["workload", "seed", "round", *hp_cols, "note", "failure", "gpu_util_mean",
     "final_val_loss", "oracle_fraction_last"]
]
jpo_rounds"""
    ),
    new_markdown_cell("## Plots (also written to the output folder with the report)"),
    new_code_cell(
        """from jpo.evaluation.report import write_report

paths = write_report(result, OUT)
for plot in paths.plots:
    display(Image(filename=str(plot)))
print(f"report: {paths.report}")"""
    ),
]


def build() -> nbformat.NotebookNode:
    """Return the notebook."""
    nb = new_notebook(cells=CELLS)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    nbformat.write(build(), HERE / "evaluate_checkpoint.ipynb")
    print(HERE / "evaluate_checkpoint.ipynb")
