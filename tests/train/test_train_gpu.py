"""Training on a CUDA GPU: the learner really runs there, and its checkpoints serve on CPUs.

Skipped where no CUDA device is visible (CI, laptops); run on a GPU machine with
``pytest -m gpu``. What it guards: ``resources.num_gpus_per_learner: auto`` puts the SAC
learner's module and optimizer on the GPU, and a checkpoint written there restores on a
CPU-only machine, where CI and Serve run the exported policy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_train import REPO, random_observations, rllib_actions, tiny_config

from jpo.train.trainer import load_train_config

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _module_devices(algo: Any) -> set[str]:
    learner = algo.learner_group._learner  # the local learner (num_learners: 0)
    module = learner.module["default_policy"]
    return {p.device.type for p in module.parameters()}


def test_auto_puts_the_local_learner_on_the_gpu_and_it_learns(tmp_path: Path) -> None:
    import ray

    from jpo.train.trainer import _local_cuda, build_sac_config, resolve_learner_resources

    cfg = load_train_config(tiny_config(tmp_path))
    learners, gpus = resolve_learner_resources(
        cfg.resources, cluster_gpus=0.0, local_cuda=_local_cuda()
    )
    assert (learners, gpus) == (0, 1.0)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        algo = build_sac_config(cfg, num_learners=learners, num_gpus_per_learner=gpus).build_algo()
        try:
            assert _module_devices(algo) == {"cuda"}
            before = {
                k: v.detach().cpu().clone()
                for k, v in algo.learner_group._learner.module["default_policy"]
                .state_dict()
                .items()
            }
            result = {}
            for _ in range(2):
                result = algo.train()
            losses = result["learners"]["default_policy"]
            assert np.isfinite(losses["qf_loss"]) and np.isfinite(losses["policy_loss"])
            after = algo.learner_group._learner.module["default_policy"].state_dict()
            moved = [k for k, v in after.items() if not torch.equal(v.detach().cpu(), before[k])]
            assert moved, "no weight changed on the GPU learner after two iterations"
        finally:
            algo.stop()
    finally:
        ray.shutdown()


def test_entry_point_trains_on_the_gpu_and_the_checkpoint_serves_on_cpu(tmp_path: Path) -> None:
    from jpo.policy.artifact import LocalPolicy
    from jpo.policy.export import load_module_from_checkpoint

    config = tiny_config(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jpo.train",
            "--config",
            str(config),
            "--export",
            str(tmp_path / "p"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GPUs per learner: 1" in proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["iterations"] == 2

    # The checkpoint restores on the CPU (CI and Serve have no GPU) and the numpy artifact
    # exported from it acts like the module to 1e-5.
    module = load_module_from_checkpoint(tmp_path / "store" / "checkpoints" / "iter_000002")
    assert {p.device.type for p in module.parameters()} == {"cpu"}
    x = random_observations(128)
    np.testing.assert_allclose(
        LocalPolicy.load(tmp_path / "p").act(x), rllib_actions(module, x), atol=1e-5
    )
