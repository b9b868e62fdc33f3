"""Shared fixtures of the physics tests: small scenarios that keep loops and Monte Carlo fast."""

from __future__ import annotations

import numpy as np
import pytest

from rl_isac.physics.calibration import calibration_scenario
from rl_isac.scenario import ScenarioConfig


@pytest.fixture
def paper_cfg() -> ScenarioConfig:
    """The paper's scenario with its defaults (I = 4)."""
    return ScenarioConfig.paper(4)


@pytest.fixture
def tiny_cfg() -> ScenarioConfig:
    """Small arrays, few subcarriers and three RF chains: for plain-loop references.

    N = 8 antennas with a 12-beam codebook (not orthogonal, so chains' noise correlates),
    L = 12 subcarriers, K = 3 symbols.
    """
    return ScenarioConfig.paper(4, num_tx_antennas=8, num_rx_antennas=8, codebook_size=12, num_rf=3,
                                num_subcarriers=12, num_tracking_symbols=3)


@pytest.fixture
def single_bs_cfg() -> ScenarioConfig:
    """The single-BS scene of ``rl-isac crb-check`` (BS at (200, 0) on a 400 m x 200 m area), signal level."""
    return calibration_scenario(fidelity="signal")


@pytest.fixture
def place_target():
    """``place(net, range_m, angle_rad, heading_rad=0.0)``: put target 0 of ``net`` at that range and angle
    from BS 0 (others untouched) and return the positions ``(I, 2)``."""

    def place(net, range_m: float, angle_rad: float, heading_rad: float = 0.0) -> np.ndarray:
        bs = net.bs_positions_m[0]
        net.positions_m = net.positions_m.copy()
        net.positions_m[0] = bs + range_m * np.array([np.cos(angle_rad), np.sin(angle_rad)])
        net.headings_rad = net.headings_rad.copy()
        net.headings_rad[0] = heading_rad
        return net.positions_m.copy()

    return place
