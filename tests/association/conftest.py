"""Random association instances shared by the tests in this folder."""

from __future__ import annotations

import numpy as np
import pytest


def random_psd(rng: np.random.Generator, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
    """``R diag(a, b) R^T`` with ``a, b`` log-uniform in ``[low, high]``; shape ``shape + (2, 2)``."""
    angle = rng.uniform(0.0, np.pi, shape)
    eig = 10.0 ** rng.uniform(np.log10(low), np.log10(high), shape + (2,))
    c, s = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    return np.einsum("...ij,...j,...kj->...ik", rot, eig, rot)


def random_instance(rng: np.random.Generator, num_bs: int, num_targets: int) -> tuple[np.ndarray, np.ndarray]:
    """``info (M, I, 2, 2)`` in [1e-2, 1e4] 1/m^2 and ``prior_info (I, 2, 2)`` in [1e-2, 1] 1/m^2."""
    return random_psd(rng, (num_bs, num_targets), 1e-2, 1e4), random_psd(rng, (num_targets,), 1e-2, 1.0)


@pytest.fixture
def make_instance():
    """The :func:`random_instance` factory."""
    return random_instance
