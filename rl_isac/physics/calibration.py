"""Monte Carlo of the BS-local estimators against the CRB (``rl-isac crb-check``).

One BS probes one target with well-placed beams (the two codebook beams that
bracket the target, :func:`rl_isac.physics.arrays.beams_toward`) at a given range
and angle; both fidelities are run on the same geometry and the statistics of
the estimates are compared with the CRB of :mod:`rl_isac.physics.fisher`.

The paper's 300 m x 100 m area cannot hold a target 150 m broadside of a BS, so
the check uses its own single-BS scene (a 400 m x 200 m area, BS at (200, 0),
sensing CP 3.2 us to cover its diagonal) with every radio parameter of the
paper's preset unchanged.
"""

from __future__ import annotations

import numpy as np

from rl_isac.network import CellFreeNetwork
from rl_isac.physics.channel import received_amplitude
from rl_isac.physics.fisher import angle_variance, range_angle_crb
from rl_isac.scenario import ScenarioConfig

DEFAULT_RANGES_M = (30.0, 60.0, 100.0, 150.0)
DEFAULT_ANGLES_DEG = (90.0, 45.0)


def calibration_scenario(base: ScenarioConfig | None = None, fidelity: str = "signal") -> ScenarioConfig:
    """The single-BS scene of the check, radio parameters from ``base`` (default: the paper's)."""
    base = base or ScenarioConfig.paper(4)
    return base.replace(bs_positions_m=((200.0, 0.0),), area_size_m=(400.0, 200.0), num_targets=1,
                        sensing_cp_s=max(base.sensing_cp_s, 3.2e-6), fidelity=fidelity)


def _run_case(cfg: ScenarioConfig, range_m: float, angle_rad: float, trials: int, seed: int) -> dict:
    net = CellFreeNetwork(cfg)
    net.reset(seed)
    bs = net.bs_positions_m[0]
    target = bs + range_m * np.array([np.cos(angle_rad), np.sin(angle_rad)])
    net.positions_m = target[None, :].copy()
    net.headings_rad = np.array([angle_rad + np.pi / 2])  # tangential motion: some Doppler-free geometry
    assoc = np.ones((1, 1), bool)
    beams = net.beams_toward(net.positions_m)
    r_est, a_est, det = [], [], []
    for _ in range(trials):
        m = net.measure(assoc, beams, predicted_positions_m=net.positions_m)
        det.append(bool(m.detected[0, 0]))
        if m.detected[0, 0]:
            r_est.append(m.range_m[0, 0])
            a_est.append(m.angle_rad[0, 0])
    r_est, a_est = np.asarray(r_est), np.asarray(a_est)
    amp = received_amplitude(cfg, np.array([range_m]))
    u = np.array([np.cos(angle_rad)])
    var_r, var_u = range_angle_crb(cfg, net.codebook, amp, u, beams[0])
    var_a = angle_variance(var_u, np.array([angle_rad]))
    from rl_isac.physics.arrays import two_way_gain

    g = two_way_gain(u, beams[0], net.codebook, cfg.antenna_spacing_wavelengths)
    snr = cfg.num_subcarriers * amp[0] ** 2 * np.sum(np.abs(g) ** 2) / cfg.noise_power_w
    nan = float("nan")
    return {
        "snr_db": float(10 * np.log10(snr)),
        "detected_fraction": float(np.mean(det)),
        "range_rmse_m": float(np.sqrt(np.mean((r_est - range_m) ** 2))) if len(r_est) else nan,
        "range_bias_m": float(np.mean(r_est - range_m)) if len(r_est) else nan,
        "range_crb_m": float(np.sqrt(var_r[0])),
        "angle_rmse_rad": float(np.sqrt(np.mean((a_est - angle_rad) ** 2))) if len(a_est) else nan,
        "angle_bias_rad": float(np.mean(a_est - angle_rad)) if len(a_est) else nan,
        "angle_crb_rad": float(np.sqrt(var_a[0])),
    }


def crb_check(trials: int = 400, surrogate_trials: int = 4000, seed: int = 0,
              ranges_m=DEFAULT_RANGES_M, angles_deg=DEFAULT_ANGLES_DEG, base: ScenarioConfig | None = None,
              progress=None) -> dict:
    """Run every (range, angle) case with both fidelities.

    Returns:
        ``{"scenario": {...}, "trials": ..., "cases": [{range_m, angle_deg, snr_db, range_rmse_m,
        range_crb_m, angle_rmse_rad, angle_crb_rad, detected_fraction, ..., "surrogate": {...},
        "checks": {...}}]}``. ``checks`` holds ``rmse_over_crb`` (signal level, worst of range
        and angle), ``bias_over_crb`` and ``surrogate_rel_diff`` (worst relative difference of
        the RMSEs); ``efficient`` says whether the 1.5x CRB rule applies and holds
        (it applies where the integrated SNR is at least 15 dB).
    """
    sig_cfg = calibration_scenario(base, "signal")
    sur_cfg = calibration_scenario(base, "surrogate")
    cases = []
    for ci, (rng_m, ang) in enumerate([(r, a) for r in ranges_m for a in angles_deg]):
        angle = np.deg2rad(ang)
        sig = _run_case(sig_cfg, rng_m, angle, trials, seed + ci)
        sur = _run_case(sur_cfg, rng_m, angle, surrogate_trials, seed + 1000 + ci)
        rmse_over_crb = max(sig["range_rmse_m"] / sig["range_crb_m"], sig["angle_rmse_rad"] / sig["angle_crb_rad"])
        bias_over_crb = max(abs(sig["range_bias_m"]) / sig["range_crb_m"],
                            abs(sig["angle_bias_rad"]) / sig["angle_crb_rad"])
        rel = max(abs(sur["range_rmse_m"] / sig["range_rmse_m"] - 1),
                  abs(sur["angle_rmse_rad"] / sig["angle_rmse_rad"] - 1))
        applies = sig["snr_db"] >= 15.0
        case = {"range_m": rng_m, "angle_deg": ang, **sig, "surrogate": sur,
                "checks": {"rmse_over_crb": rmse_over_crb, "bias_over_crb": bias_over_crb,
                           "surrogate_rel_diff": rel, "rule_applies": applies,
                           "efficient": bool(rmse_over_crb <= 1.5) if applies else None,
                           "surrogate_within_20pct": bool(rel <= 0.2) if applies else None}}
        cases.append(case)
        if progress is not None:
            progress(case)
    return {"scenario": sig_cfg.to_dict(), "trials": trials, "surrogate_trials": surrogate_trials, "seed": seed,
            "cases": cases}
