"""A minimal single-file PyTorch SAC (Haarnoja et al. 2018, with automatic temperature).

Written as the yardstick for RLlib's cost in benchmarks/train (issue 6, item 7): the same
env, the same network sizes (actor MLP -> 2k outputs (loc, log-std), tanh-squashed
Gaussian; twin Q MLPs over [obs, action]; target critics with Polyak averaging), the same
batch size, learning rates, gamma, tau and update-to-data ratio as the RLlib run it is
compared with. No replay prioritization (RLlib's default buffer is prioritized; the bench
runs RLlib with the uniform EpisodeReplayBuffer for a like-for-like comparison).

Run: python benchmarks/train/minimal_sac.py --steps 5000
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn


@dataclass
class Settings:
    env_id: str = "jpo/PrometheusReplay-v0"
    env_config: dict | None = None
    hidden: tuple[int, ...] = (64, 64)
    batch_size: int = 256
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.9
    tau: float = 0.005
    buffer: int = 100_000
    warmup: int = 1000
    updates_per_step: float = 1.0
    seed: int = 0
    init_actor: str = ""  # artifact folder whose actor starts the run ("" = random init)
    init_std: float = 0.3  # with init_actor: the starting policy's action std (pre-tanh)
    actor_delay: int = 0  # env steps after the warm-up before the actor starts learning
    # Behaviour cloning towards the oracle teacher (jpo/sim/teacher.py), TD3+BC style (Fujimoto &
    # Gu 2021): actor loss = SAC loss / mean|Q| + bc_weight * squared error to the
    # teacher's action. 0 = plain SAC.
    bc_weight: float = 0.0
    bc_hold: tuple[str, ...] = ("learning_rate",)  # the teacher's held hyperparameters
    oracle_cache: str = ""  # JSON cache of the oracle configurations ("" = none)


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Agent:
    def __init__(self, n_obs: int, n_act: int, s: Settings):
        h = list(s.hidden)
        self.actor = mlp([n_obs, *h, 2 * n_act])
        self.q1, self.q2 = mlp([n_obs + n_act, *h, 1]), mlp([n_obs + n_act, *h, 1])
        self.t1, self.t2 = mlp([n_obs + n_act, *h, 1]), mlp([n_obs + n_act, *h, 1])
        self.t1.load_state_dict(self.q1.state_dict())
        self.t2.load_state_dict(self.q2.state_dict())
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.target_entropy = -float(n_act)
        self.opt_pi = torch.optim.Adam(self.actor.parameters(), lr=s.actor_lr)
        self.opt_q = torch.optim.Adam(
            [*self.q1.parameters(), *self.q2.parameters()], lr=s.critic_lr
        )
        self.opt_a = torch.optim.Adam([self.log_alpha], lr=s.alpha_lr)
        self.s = s
        self.learn_actor = True
        if s.init_actor:
            self.load_actor(s.init_actor, s.init_std)

    def load_actor(self, artifact: str, std: float) -> None:
        """Start from an exported artifact's actor, with a fixed exploration std."""
        weights = np.load(Path(artifact) / "policy.npz")
        linears = [m for m in self.actor if isinstance(m, nn.Linear)]
        if len(weights.files) != 2 * len(linears):
            n = len(weights.files) // 2
            raise SystemExit(f"{artifact}: {n} layers, expected {len(linears)}")
        with torch.no_grad():
            for i, lin in enumerate(linears):
                w, b = weights[f"l{i}.weight"], weights[f"l{i}.bias"]
                if w.shape != tuple(lin.weight.shape):
                    raise SystemExit(f"{artifact}: layer {i} has shape {w.shape}")
                lin.weight.copy_(torch.as_tensor(w))
                lin.bias.copy_(torch.as_tensor(b))
            k = linears[-1].out_features // 2  # [loc, log_std]: the artifact trained loc only
            linears[-1].weight[k:].zero_()
            linears[-1].bias[k:].fill_(float(np.log(std)))

    def dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_std = self.actor(obs).chunk(2, dim=-1)
        return loc, log_std.clamp(-20.0, 2.0).exp()

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, std = self.dist(obs)
        u = loc + std * torch.randn_like(loc)
        a = torch.tanh(u)
        logp = torch.distributions.Normal(loc, std).log_prob(u).sum(-1)
        logp = logp - (2.0 * (np.log(2.0) - u - nn.functional.softplus(-2.0 * u))).sum(-1)
        return a, logp

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        with torch.no_grad():
            o = torch.as_tensor(obs, dtype=torch.float32)[None]
            if deterministic:
                return torch.tanh(self.dist(o)[0])[0].numpy()
            return self.sample(o)[0][0].numpy()

    def update(self, o, a, r, o2, d, label=None, has_label=None) -> None:
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            a2, logp2 = self.sample(o2)
            x2 = torch.cat([o2, a2], -1)
            q_t = torch.min(self.t1(x2), self.t2(x2)).squeeze(-1) - alpha * logp2
            y = r + self.s.gamma * (1.0 - d) * q_t
        x = torch.cat([o, a], -1)
        q_loss = ((self.q1(x).squeeze(-1) - y) ** 2).mean() + (
            (self.q2(x).squeeze(-1) - y) ** 2
        ).mean()
        self.opt_q.zero_grad()
        q_loss.backward()
        self.opt_q.step()
        if not self.learn_actor:  # policy evaluation only: the critics catch up first
            self._soft_update()
            return
        a_new, logp = self.sample(o)
        xn = torch.cat([o, a_new], -1)
        for p in (*self.q1.parameters(), *self.q2.parameters()):
            p.requires_grad_(False)
        q_pi = torch.min(self.q1(xn), self.q2(xn)).squeeze(-1)
        pi_loss = (alpha * logp - q_pi).mean()
        if label is not None and self.s.bc_weight > 0:
            loc = self.dist(o)[0]
            sq = ((torch.tanh(loc) - label) ** 2).sum(-1)
            bc = (has_label * sq).sum() / has_label.sum().clamp(min=1.0)
            pi_loss = pi_loss / q_pi.abs().mean().detach().clamp(min=1e-3) + self.s.bc_weight * bc
        for p in (*self.q1.parameters(), *self.q2.parameters()):
            p.requires_grad_(True)
        self.opt_pi.zero_grad()
        pi_loss.backward()
        self.opt_pi.step()
        a_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.opt_a.zero_grad()
        a_loss.backward()
        self.opt_a.step()
        self._soft_update()

    def _soft_update(self) -> None:
        with torch.no_grad():
            for q, t in ((self.q1, self.t1), (self.q2, self.t2)):
                for p, tp in zip(q.parameters(), t.parameters(), strict=True):
                    tp.mul_(1.0 - self.s.tau).add_(self.s.tau * p)


def make_env(s: Settings):
    import jpo.sim  # noqa: F401  (registers jpo/PrometheusReplay-v0)

    return gym.make(s.env_id, config=s.env_config) if s.env_config else gym.make(s.env_id)


def oracle_cache_path(explicit: str | Path | None, env_config: dict) -> Path | None:
    """The oracle cache to use: ``explicit``, else the env's own (env.config.teacher_cache).

    The env fills its cache when it builds with the teacher on, so sharing it saves the
    ~2 min search a second time.
    """
    path = explicit or env_config.get("teacher_cache", "")
    return Path(path) if path else None


def train(s: Settings, steps: int, on_episode=None) -> dict:
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    env = make_env(s)
    n_obs, n_act = env.observation_space.shape[0], env.action_space.shape[0]
    agent = Agent(n_obs, n_act, s)
    O = np.zeros((s.buffer, n_obs), np.float32)  # noqa: E741  (replay arrays: O A R O2 D)
    A = np.zeros((s.buffer, n_act), np.float32)
    R = np.zeros(s.buffer, np.float32)
    O2 = np.zeros((s.buffer, n_obs), np.float32)
    D = np.zeros(s.buffer, np.float32)
    bc = s.bc_weight > 0
    env_labels = False
    if bc:
        from jpo.sim.teacher import TEACHER_ACTION, cached_oracle_configs, teacher_action

        base = env.unwrapped
        # The env labels every state itself when its teacher holds what ours holds (the
        # RLlib path reads the same info); otherwise label here, with --bc-hold.
        env_labels = base.config.teacher and set(base.config.teacher_hold) == set(s.bc_hold)
        if not env_labels:
            cache = oracle_cache_path(s.oracle_cache, s.env_config or {})
            oracles = cached_oracle_configs(base.profiles, base.constraints, cache)
        LAB = np.zeros((s.buffer, n_act), np.float32)
        HAS = np.zeros(s.buffer, np.float32)
    n = ptr = 0
    obs, info = env.reset(seed=s.seed)
    ep_ret, returns, updates, debt = 0.0, [], 0, 0.0
    t_env = t_upd = 0.0
    t0 = time.perf_counter()
    for step in range(steps):
        t = time.perf_counter()
        random_phase = step < s.warmup and not s.init_actor
        a = rng.uniform(-1, 1, n_act).astype(np.float32) if random_phase else agent.act(obs)
        agent.learn_actor = step >= s.warmup + s.actor_delay
        if bc and env_labels:
            label = np.asarray(info[TEACHER_ACTION], np.float32)
            HAS[ptr] = float(not np.isnan(label).any())
            LAB[ptr] = np.nan_to_num(label)
        elif bc:
            target = oracles.get(base.profile.name)
            HAS[ptr] = float(target is not None)
            LAB[ptr] = 0.0 if target is None else teacher_action(base, target, s.bc_hold)
        obs2, r, term, trunc, info = env.step(a)
        O[ptr], A[ptr], R[ptr], O2[ptr], D[ptr] = obs, a, r, obs2, float(term)
        ptr, n = (ptr + 1) % s.buffer, min(n + 1, s.buffer)
        ep_ret += float(r)
        obs = obs2
        if term or trunc:
            returns.append(ep_ret)
            if on_episode is not None:
                on_episode(step + 1, ep_ret, agent)
            ep_ret = 0.0
            obs, info = env.reset()
        t_env += time.perf_counter() - t
        if step >= s.warmup:
            t = time.perf_counter()
            debt += s.updates_per_step
            while debt >= 1.0:
                idx = rng.integers(0, n, s.batch_size)
                arrays = (O, A, R, O2, D, LAB, HAS) if bc else (O, A, R, O2, D)
                agent.update(*(torch.as_tensor(x[idx]) for x in arrays))
                updates += 1
                debt -= 1.0
            t_upd += time.perf_counter() - t
    wall = time.perf_counter() - t0
    return {
        "env_steps": steps,
        "updates": updates,
        "wall_s": wall,
        "env_steps_per_s": steps / wall,
        "updates_per_s": updates / wall,
        "env_time_s": t_env,
        "update_time_s": t_upd,
        "last_returns_mean": float(np.mean(returns[-20:])) if returns else float("nan"),
        "agent": agent,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--episode-length", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    s = Settings(env_config={"split": "train", "episode_length": args.episode_length})
    out = train(s, args.steps)
    out.pop("agent")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
