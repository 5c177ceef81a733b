"""Workload response model, simulated workloads and the Gymnasium replay env.

Importing this package registers ``jpo/PrometheusReplay-v0`` with Gymnasium (the env
module itself, with pyarrow and the response model, is only imported by ``make``)::

    import gymnasium as gym
    import jpo.sim  # noqa: F401

    env = gym.make("jpo/PrometheusReplay-v0", config={"episode_length": 8})
"""

import gymnasium

gymnasium.register(
    id="jpo/PrometheusReplay-v0",
    entry_point="jpo.sim.replay_env:PrometheusReplayEnv",
    disable_env_checker=False,
)
