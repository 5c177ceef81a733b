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

    def update(self, o, a, r, o2, d) -> None:
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
        a_new, logp = self.sample(o)
        xn = torch.cat([o, a_new], -1)
        for p in (*self.q1.parameters(), *self.q2.parameters()):
            p.requires_grad_(False)
        pi_loss = (alpha * logp - torch.min(self.q1(xn), self.q2(xn)).squeeze(-1)).mean()
        for p in (*self.q1.parameters(), *self.q2.parameters()):
            p.requires_grad_(True)
        self.opt_pi.zero_grad()
        pi_loss.backward()
        self.opt_pi.step()
        a_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.opt_a.zero_grad()
        a_loss.backward()
        self.opt_a.step()
        with torch.no_grad():
            for q, t in ((self.q1, self.t1), (self.q2, self.t2)):
                for p, tp in zip(q.parameters(), t.parameters(), strict=True):
                    tp.mul_(1.0 - self.s.tau).add_(self.s.tau * p)


def make_env(s: Settings):
    import envs  # noqa: F401  (registers jpo/PrometheusReplay-v0)

    return gym.make(s.env_id, config=s.env_config) if s.env_config else gym.make(s.env_id)


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
    n = ptr = 0
    obs, _ = env.reset(seed=s.seed)
    ep_ret, returns, updates, debt = 0.0, [], 0, 0.0
    t_env = t_upd = 0.0
    t0 = time.perf_counter()
    for step in range(steps):
        t = time.perf_counter()
        a = rng.uniform(-1, 1, n_act).astype(np.float32) if step < s.warmup else agent.act(obs)
        obs2, r, term, trunc, _ = env.step(a)
        O[ptr], A[ptr], R[ptr], O2[ptr], D[ptr] = obs, a, r, obs2, float(term)
        ptr, n = (ptr + 1) % s.buffer, min(n + 1, s.buffer)
        ep_ret += float(r)
        obs = obs2
        if term or trunc:
            returns.append(ep_ret)
            if on_episode is not None:
                on_episode(step + 1, ep_ret, agent)
            ep_ret = 0.0
            obs, _ = env.reset()
        t_env += time.perf_counter() - t
        if step >= s.warmup:
            t = time.perf_counter()
            debt += s.updates_per_step
            while debt >= 1.0:
                idx = rng.integers(0, n, s.batch_size)
                agent.update(*(torch.as_tensor(x[idx]) for x in (O, A, R, O2, D)))
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
