"""Scenario configuration: geometry, arrays, OFDM numerology, link budget, mobility.

One frozen, validated dataclass holds everything the world needs. The paper
(Sec. 4) fixes the geometry, the arrays, the codebook, the block duration and
the mobility; it gives no radio numerology, so the defaults below are standard
5G NR FR2 values (see ``ARCHITECTURE.md``, "Physical defaults").

Conventions:
    * SI units everywhere, the unit in the field name (``_m``, ``_hz``, ``_s``,
      ``_dbm``, ``_db``, ``_deg``); degrees only in the config, converted to
      radians by properties.
    * Each BS carries a ULA along the x axis; the angle of a target seen from a
      BS is ``atan2(y - y_bs, x - x_bs)``. A ULA only resolves ``cos(theta)``,
      so a BS must see the whole area on one side of its axis: every BS lies on
      the bottom (``y = 0``) or the top (``y = area_height``) edge, and targets
      stay strictly inside the area (see :mod:`rl_isac.physics.mobility`).

Example:
    >>> cfg = ScenarioConfig.paper(num_targets=6)
    >>> cfg.num_bs, cfg.num_pairs
    (6, 12)
    >>> ScenarioConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rl_isac.config import ConfigMixin
from rl_isac.errors import ConfigError

SPEED_OF_LIGHT_MPS = 299_792_458.0
BOLTZMANN_J_PER_K = 1.380649e-23

FIDELITIES = ("signal", "surrogate")

PAPER_BS_POSITIONS_M = ((0.0, 0.0), (150.0, 0.0), (300.0, 0.0), (0.0, 100.0), (150.0, 100.0), (300.0, 100.0))


@dataclass(frozen=True)
class ScenarioConfig(ConfigMixin):
    """Everything the simulated cell-free ISAC network needs.

    Geometry (paper, Sec. 4).
    """

    bs_positions_m: tuple[tuple[float, float], ...] = PAPER_BS_POSITIONS_M
    """BS positions ``[(x_m, y_m), ...]``; each on the bottom or top edge of the area."""
    area_size_m: tuple[float, float] = (300.0, 100.0)
    """Width (x) and height (y) of the rectangular area, metres; its corner (0, 0) is the origin."""
    num_targets: int = 4
    """Number of targets ``I``; at most ``num_bs * num_rf`` so that (5d) can hold."""

    # Arrays and codebook (paper, Sec. 4).
    num_tx_antennas: int = 32
    """Transmit ULA size ``N_T``."""
    num_rx_antennas: int = 32
    """Receive ULA size ``N_R``."""
    num_rf: int = 2
    """RF chains per BS ``N_RF`` (tx and rx alike): the most targets a BS can track at once (5c)."""
    codebook_size: int = 32
    """DFT codebook size ``M_T = M_R``: beams at ``cos(theta) = -1 + (2 b + 1) / codebook_size``."""
    antenna_spacing_wavelengths: float = 0.5
    """Element spacing ``d_s / lambda``; half a wavelength avoids grating lobes."""

    # OFDM numerology (5G NR FR2; the paper gives none).
    carrier_hz: float = 28e9
    """Carrier frequency, hertz (28 GHz: lambda = 10.7 mm)."""
    subcarrier_spacing_hz: float = 120e3
    """Subcarrier spacing ``delta_f``, hertz (NR numerology 3)."""
    num_subcarriers: int = 528
    """Contiguous subcarriers ``L`` of each BS's own band (528 x 120 kHz = 63.36 MHz; six bands fit 400 MHz)."""
    sensing_cp_s: float = 2.4e-6
    """Cyclic prefix of the sensing symbols, seconds; must cover the longest round trip in the area
    (2.11 us for the paper's 316 m diagonal) so that eq. (2) holds per subcarrier."""
    num_tracking_symbols: int = 4
    """Tracking-phase OFDM symbols per block ``K``; each pair sweeps K (tx, rx) beam pairs."""

    # Link budget.
    tx_power_dbm: float = 30.0
    """Transmit power of one BS, dBm, split evenly over its RF chains and subcarriers."""
    noise_figure_db: float = 10.0
    """Receiver noise figure, dB."""
    noise_temperature_k: float = 290.0
    """Reference noise temperature, kelvin."""
    rcs_m2: float = 1.0
    """Radar cross-section of every target, square metres (random phase per BS and block)."""

    # Time and mobility (paper, Sec. 4).
    block_duration_s: float = 0.1
    """Block duration ``delta_T``, seconds."""
    speed_mps: float = 10.0
    """Target speed ``v``, metres per second (fixed)."""
    heading_step_deg: float = 15.0
    """Heading random walk: ``beta_{q+1} = beta_q + U(-step, +step)``, degrees."""
    num_blocks: int = 100
    """Blocks ``Q`` per episode."""
    window: int = 8
    """Window ``W`` of past blocks the CU estimator sees."""
    edge_margin_m: float = 2.0
    """Targets stay in ``[margin, size - margin]`` on both axes (reflected at that boundary), metres."""
    spawn_margin_m: float = 10.0
    """Initial positions are uniform in ``[spawn_margin, size - spawn_margin]``, metres."""
    acquisition_std_m: float = 1.0
    """Std of the initial acquisition the CU gets at q = 0 (true position + N(0, std^2 I) per axis), metres."""

    # BS front end.
    detection_pfa: float = 1e-4
    """False-alarm probability of one pair's detector over its whole range gate."""
    range_gate_m: float = 10.0
    """Half-width of the range gate around the CU's predicted range, metres (used when a prediction is given)."""
    fidelity: str = "signal"
    """``"signal"``: synthesise eq. (2) and estimate; ``"surrogate"``: draw from the Fisher information."""
    num_peaks: int = 2
    """Range peaks ``P`` each pair's front end reports from its gate (strongest first, each resolved
    from the others by at least ``range_resolution_m``): the extra axis of the ``peak_*`` arrays of
    :class:`~rl_isac.physics.measurements.Measurements`, so the CU can tell its own target from a
    neighbour inside the same beams and range gate."""

    def __post_init__(self) -> None:
        # Normalise sequences (lists from YAML/JSON) to tuples so the config stays hashable, and numpy
        # scalars to Python numbers so the config round-trips through YAML.
        for name, shape in (("bs_positions_m", "a sequence of (x_m, y_m) number pairs"),
                            ("area_size_m", "a (width_m, height_m) pair of numbers")):
            value = getattr(self, name)
            try:
                if name == "bs_positions_m":
                    norm = tuple(tuple(_as_float(c) for c in p) for p in value)
                else:
                    norm = tuple(_as_float(c) for c in value)
            except (TypeError, ValueError):
                raise ConfigError(name, value, f"must be {shape}") from None
            object.__setattr__(self, name, norm)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.integer):
                object.__setattr__(self, f.name, int(value))
            elif isinstance(value, np.floating):
                object.__setattr__(self, f.name, float(value))
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        def positive(name: str, allow_zero: bool = False) -> None:
            value = getattr(self, name)
            if not _is_number(value):
                raise ConfigError(name, value, "must be a number" + _YAML_HINT * isinstance(value, str))
            ok = value >= 0 if allow_zero else value > 0
            if not (math.isfinite(value) and ok):
                raise ConfigError(name, value, "must be a finite number " + (">= 0" if allow_zero else "> 0"))

        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, value, "must be an integer >= 1")

        for name in ("num_targets", "num_tx_antennas", "num_rx_antennas", "num_rf", "codebook_size",
                     "num_subcarriers", "num_tracking_symbols", "num_blocks", "window", "num_peaks"):
            positive_int(name)
        for name in ("antenna_spacing_wavelengths", "carrier_hz", "subcarrier_spacing_hz", "sensing_cp_s",
                     "noise_temperature_k", "rcs_m2", "block_duration_s", "range_gate_m",
                     "acquisition_std_m"):
            positive(name)
        for name in ("speed_mps", "edge_margin_m", "spawn_margin_m", "heading_step_deg"):
            positive(name, allow_zero=True)
        for name in ("tx_power_dbm", "noise_figure_db", "detection_pfa"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value)):
                raise ConfigError(name, value, "must be a finite number (dB values may be negative)")
        if self.noise_figure_db < 0:
            raise ConfigError("noise_figure_db", self.noise_figure_db, "a noise figure is >= 0 dB")
        if self.heading_step_deg > 180:
            raise ConfigError("heading_step_deg", self.heading_step_deg, "must be in [0, 180] degrees")
        if not 0 < self.detection_pfa < 1:
            raise ConfigError("detection_pfa", self.detection_pfa, "a probability strictly between 0 and 1")
        if self.fidelity not in FIDELITIES:
            raise ConfigError("fidelity", self.fidelity, f"must be one of {FIDELITIES}")
        if self.num_rx_antennas != self.num_tx_antennas:
            raise ConfigError("num_rx_antennas", self.num_rx_antennas,
                              f"must equal num_tx_antennas={self.num_tx_antennas}: the monostatic echo model and "
                              "the shared DFT codebook assume N_T = N_R")
        if self.antenna_spacing_wavelengths > 0.5:
            raise ConfigError("antenna_spacing_wavelengths", self.antenna_spacing_wavelengths,
                              "must be <= 0.5 so the ULA has no grating lobes")

        if len(self.area_size_m) != 2 or min(self.area_size_m) <= 0 or not all(map(math.isfinite, self.area_size_m)):
            raise ConfigError("area_size_m", self.area_size_m, "must be (width_m, height_m), both finite and > 0")
        width, height = self.area_size_m
        if 2 * self.edge_margin_m >= min(width, height):
            raise ConfigError("edge_margin_m", self.edge_margin_m,
                              "twice the margin must be below the area's smaller side")
        if self.spawn_margin_m < self.edge_margin_m or 2 * self.spawn_margin_m >= min(width, height):
            raise ConfigError("spawn_margin_m", self.spawn_margin_m,
                              "must be >= edge_margin_m and twice it below the area's smaller side")
        if len(self.bs_positions_m) < 1:
            raise ConfigError("bs_positions_m", self.bs_positions_m, "at least one BS is needed")
        for k, pos in enumerate(self.bs_positions_m):
            if len(pos) != 2 or not all(map(math.isfinite, pos)):
                raise ConfigError(f"bs_positions_m[{k}]", pos, "must be a finite (x_m, y_m) pair")
            x, y = pos
            if not 0 <= x <= width or not 0 <= y <= height:
                raise ConfigError(f"bs_positions_m[{k}]", pos, f"BS outside the area [0, {width}] x [0, {height}] m")
            if y not in (0.0, height):
                raise ConfigError(f"bs_positions_m[{k}]", pos,
                                  "a ULA along x cannot tell y from its mirror image: every BS must lie on the "
                                  f"bottom (y = 0) or top (y = {height}) edge")
        if len(set(self.bs_positions_m)) != len(self.bs_positions_m):
            raise ConfigError("bs_positions_m", self.bs_positions_m, "two BSs share one position")
        if self.num_targets > self.num_bs * self.num_rf:
            raise ConfigError("num_targets", self.num_targets,
                              f"(5d) needs every target covered by at least one of num_bs * num_rf = "
                              f"{self.num_bs} * {self.num_rf} = {self.num_bs * self.num_rf} RF chains")
        if self.max_round_trip_s > self.sensing_cp_s:
            raise ConfigError("sensing_cp_s", self.sensing_cp_s,
                              f"must cover the longest round trip in the area ({self.max_round_trip_s:.3e} s)")
        if self.max_unambiguous_range_m < self.max_range_m:
            raise ConfigError("subcarrier_spacing_hz", self.subcarrier_spacing_hz,
                              f"unambiguous range c/(2 delta_f) = {self.max_unambiguous_range_m:.1f} m is below "
                              f"the area diagonal {self.max_range_m:.1f} m")

    # ------------------------------------------------------------------ derived values
    @property
    def num_bs(self) -> int:
        """Number of BSs ``M``."""
        return len(self.bs_positions_m)

    @property
    def num_pairs(self) -> int:
        """Sub-actions per block ``J = M * N_RF`` (one per RF chain)."""
        return self.num_bs * self.num_rf

    @property
    def wavelength_m(self) -> float:
        """Carrier wavelength ``lambda``, metres."""
        return SPEED_OF_LIGHT_MPS / self.carrier_hz

    @property
    def bandwidth_hz(self) -> float:
        """Occupied bandwidth of one BS ``L * delta_f``, hertz."""
        return self.num_subcarriers * self.subcarrier_spacing_hz

    @property
    def range_resolution_m(self) -> float:
        """Range bin ``c / (2 B)``, metres."""
        return SPEED_OF_LIGHT_MPS / (2 * self.bandwidth_hz)

    @property
    def max_unambiguous_range_m(self) -> float:
        """``c / (2 delta_f)``, metres."""
        return SPEED_OF_LIGHT_MPS / (2 * self.subcarrier_spacing_hz)

    @property
    def max_range_m(self) -> float:
        """Area diagonal: no BS-target distance exceeds it, metres."""
        return math.hypot(*self.area_size_m)

    @property
    def max_round_trip_s(self) -> float:
        """Round trip over the area diagonal ``2 d_max / c``, seconds."""
        return 2 * self.max_range_m / SPEED_OF_LIGHT_MPS

    @property
    def symbol_duration_s(self) -> float:
        """Sensing OFDM symbol duration ``T_0 = 1 / delta_f + CP``, seconds."""
        return 1.0 / self.subcarrier_spacing_hz + self.sensing_cp_s

    @property
    def tx_power_per_subcarrier_w(self) -> float:
        """``P`` of eq. (2) for one RF chain on one subcarrier, watts."""
        return 10 ** ((self.tx_power_dbm - 30) / 10) / (self.num_rf * self.num_subcarriers)

    @property
    def noise_power_w(self) -> float:
        """AWGN power ``sigma^2`` per subcarrier and receive antenna ``k T F delta_f``, watts."""
        noise_factor = 10 ** (self.noise_figure_db / 10)
        return BOLTZMANN_J_PER_K * self.noise_temperature_k * noise_factor * self.subcarrier_spacing_hz

    @property
    def heading_step_rad(self) -> float:
        """Half-width of the uniform heading step, radians."""
        return math.radians(self.heading_step_deg)

    @property
    def step_m(self) -> float:
        """Distance a target moves in one block ``v delta_T``, metres."""
        return self.speed_mps * self.block_duration_s

    # ------------------------------------------------------------------ presets
    @classmethod
    def paper(cls, num_targets: int = 4, **overrides: Any) -> ScenarioConfig:
        """The paper's scenario (Sec. 4): 6 BSs on a 300 m x 100 m area; the paper runs I in {4, 6, 8}."""
        return cls(num_targets=num_targets, **overrides)

    @classmethod
    def large(cls, num_targets: int = 24, **overrides: Any) -> ScenarioConfig:
        """Scale test: 12 BSs on a 600 m x 100 m strip, 24 targets by default.

        The longer diagonal (608 m) needs a 4.2 us sensing cyclic prefix.
        """
        xs = (0.0, 120.0, 240.0, 360.0, 480.0, 600.0)
        positions = tuple((x, 0.0) for x in xs) + tuple((x, 100.0) for x in xs)
        kwargs: dict[str, Any] = {"bs_positions_m": positions, "area_size_m": (600.0, 100.0),
                                  "sensing_cp_s": 4.2e-6, "num_targets": num_targets}
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def preset(cls, name: str, num_targets: int | None = None, **overrides: Any) -> ScenarioConfig:
        """A preset by name: ``"paper"`` or ``"large"``."""
        if name not in PRESETS:
            raise ConfigError("preset", name, f"must be one of {sorted(PRESETS)}")
        if num_targets is not None:
            overrides["num_targets"] = num_targets
        return getattr(cls, name)(**overrides)

    # ------------------------------------------------------------------ round trip
    def to_yaml(self, path: str | Path | None = None) -> str:
        """YAML text of :meth:`to_dict`; also written to ``path`` when given."""
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, source: str | Path) -> ScenarioConfig:
        """Config from a YAML file path or YAML text."""
        import yaml

        text = Path(source).read_text() if _is_path(source) else source
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ConfigError("yaml", source, "must hold a mapping of config fields")
        return cls.from_dict(data)


PRESETS = ("paper", "large")

_YAML_HINT = " (YAML reads an exponent without a dot, e.g. 28e9, as a string: write 28.0e9)"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_float(value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _is_path(source: str | Path) -> bool:
    """A Path, or a one-line string naming an existing file (YAML text otherwise)."""
    if isinstance(source, Path):
        return True
    if "\n" in source or source.lstrip().startswith("{") or len(source) > 1024:
        return False
    try:
        return Path(source).is_file()
    except OSError:
        return False

__all__ = ["ScenarioConfig", "PRESETS", "FIDELITIES", "SPEED_OF_LIGHT_MPS", "BOLTZMANN_J_PER_K"]
