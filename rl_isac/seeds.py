"""Seed discipline: evaluation episodes and training episodes never share a world seed.

Evaluation (the harness) uses world seeds ``>= EVAL_SEED_BASE``; every training or
validation episode (pre-training, L2O, PPO) draws its world seed with
:func:`training_world_seed`, which is always below it.
"""

from __future__ import annotations

import numpy as np

from rl_isac.errors import ConfigError

EVAL_SEED_BASE = 1_000_000_000


def evaluation_seeds(seed: int, episodes: int) -> list[int]:
    """World seeds of the evaluation episodes of run ``seed``: ``EVAL_SEED_BASE + 1000 seed + e``."""
    if seed < 0 or episodes < 1 or episodes > 1000:
        raise ConfigError("seed/episodes", (seed, episodes), "seed must be >= 0 and 1 <= episodes <= 1000")
    return [EVAL_SEED_BASE + 1000 * seed + e for e in range(episodes)]


def is_evaluation_seed(world_seed: int) -> bool:
    """True for seeds reserved to evaluation; training must not use them."""
    return world_seed >= EVAL_SEED_BASE


def training_world_seed(seed: int, split: int, episode: int) -> int:
    """World seed of training (split 0), validation (split 1) or other (split >= 2) episodes; < EVAL_SEED_BASE."""
    state = np.random.SeedSequence([int(seed), int(split), int(episode)]).generate_state(2, dtype=np.uint64)
    return int(state[0] % np.uint64(EVAL_SEED_BASE))
