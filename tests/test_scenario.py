"""Tests of rl_isac.scenario: the paper's defaults, presets, round trips and validation."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from rl_isac.errors import ConfigError
from rl_isac.scenario import PAPER_BS_POSITIONS_M, ScenarioConfig

NAN = float("nan")
INF = float("inf")


# ---------------------------------------------------------------------------------------------- defaults
def test_defaults_are_the_papers_geometry_arrays_and_mobility():
    cfg = ScenarioConfig()
    assert cfg.bs_positions_m == ((0.0, 0.0), (150.0, 0.0), (300.0, 0.0), (0.0, 100.0), (150.0, 100.0),
                                  (300.0, 100.0))
    assert cfg.num_bs == 6
    assert cfg.area_size_m == (300.0, 100.0)
    assert cfg.num_tx_antennas == cfg.num_rx_antennas == 32
    assert cfg.num_rf == 2
    assert cfg.codebook_size == 32
    assert cfg.block_duration_s == 0.1
    assert cfg.speed_mps == 10.0
    assert cfg.heading_step_deg == 15.0
    assert cfg.fidelity == "signal"


def test_defaults_are_the_architecture_radio_numerology():
    cfg = ScenarioConfig()
    assert cfg.carrier_hz == 28e9
    assert cfg.subcarrier_spacing_hz == 120e3
    assert cfg.num_subcarriers == 528
    assert cfg.num_tracking_symbols == 4
    assert cfg.tx_power_dbm == 30.0
    assert cfg.noise_figure_db == 10.0
    assert cfg.rcs_m2 == 1.0
    assert cfg.antenna_spacing_wavelengths == 0.5


def test_derived_values_follow_from_the_fields():
    cfg = ScenarioConfig()
    assert cfg.num_pairs == 12
    assert cfg.wavelength_m == pytest.approx(10.7e-3, rel=1e-2)
    assert cfg.bandwidth_hz == pytest.approx(63.36e6)
    assert cfg.range_resolution_m == pytest.approx(299_792_458.0 / (2 * 63.36e6))
    assert cfg.step_m == pytest.approx(1.0)
    assert cfg.heading_step_rad == pytest.approx(math.radians(15.0))
    assert cfg.max_range_m == pytest.approx(math.hypot(300, 100))
    # The sensing cyclic prefix covers the longest round trip (about 2.11 us).
    assert cfg.max_round_trip_s == pytest.approx(2.109e-6, rel=1e-3)
    assert cfg.max_round_trip_s < cfg.sensing_cp_s
    assert cfg.symbol_duration_s == pytest.approx(1 / 120e3 + cfg.sensing_cp_s)
    # 30 dBm = 1 W split evenly over 2 RF chains and 528 subcarriers.
    assert cfg.tx_power_per_subcarrier_w == pytest.approx(1.0 / (2 * 528))
    assert cfg.noise_power_w == pytest.approx(1.380649e-23 * 290 * 10 * 120e3)


# ---------------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("num_targets", [4, 6, 8])
def test_paper_preset_builds_for_each_target_count(num_targets):
    cfg = ScenarioConfig.paper(num_targets)
    assert cfg.num_targets == num_targets
    assert cfg.bs_positions_m == PAPER_BS_POSITIONS_M
    assert cfg == ScenarioConfig.preset("paper", num_targets)


def test_large_preset_has_twelve_bs_on_a_600_m_strip_and_24_targets():
    cfg = ScenarioConfig.large()
    assert cfg.num_bs == 12
    assert cfg.area_size_m == (600.0, 100.0)
    assert cfg.num_targets == 24
    assert cfg.num_targets <= cfg.num_pairs
    assert all(y in (0.0, 100.0) for _, y in cfg.bs_positions_m)
    assert cfg.max_round_trip_s < cfg.sensing_cp_s
    assert ScenarioConfig.preset("large") == cfg


def test_presets_accept_overrides():
    cfg = ScenarioConfig.paper(6, fidelity="surrogate", num_blocks=10)
    assert (cfg.fidelity, cfg.num_blocks, cfg.num_targets) == ("surrogate", 10, 6)


def test_unknown_preset_raises_config_error_naming_it():
    with pytest.raises(ConfigError, match="bogus"):
        ScenarioConfig.preset("bogus")


# ---------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("cfg", [ScenarioConfig(), ScenarioConfig.paper(8, fidelity="surrogate"),
                                 ScenarioConfig.large()], ids=["default", "paper8-surrogate", "large"])
def test_dict_round_trip_is_exact(cfg):
    data = cfg.to_dict()
    json.dumps(data)  # plain builtins only
    back = ScenarioConfig.from_dict(data)
    assert back == cfg
    assert hash(back) == hash(cfg)


@pytest.mark.parametrize("cfg", [ScenarioConfig(), ScenarioConfig.large(num_targets=20)], ids=["default", "large"])
def test_yaml_round_trip_through_text_and_file_is_exact(cfg, tmp_path):
    text = cfg.to_yaml()
    assert ScenarioConfig.from_yaml(text) == cfg
    path = tmp_path / "scenario.yaml"
    cfg.to_yaml(path)
    assert ScenarioConfig.from_yaml(path) == cfg
    assert ScenarioConfig.from_yaml(str(path)) == cfg


def test_yaml_accepts_single_line_flow_text():
    """JSON is YAML: a one-line mapping (longer than a file name may be) must parse as text."""
    cfg = ScenarioConfig.paper(6)
    assert ScenarioConfig.from_yaml(json.dumps(cfg.to_dict())) == cfg


def test_yaml_that_is_not_a_mapping_raises_config_error():
    with pytest.raises(ConfigError):
        ScenarioConfig.from_yaml("- 1\n- 2\n")


def test_config_is_frozen_and_replace_validates():
    cfg = ScenarioConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_targets = 5  # type: ignore[misc]
    assert cfg.replace(num_targets=6).num_targets == 6
    with pytest.raises(ConfigError, match="rcs_m2"):
        cfg.replace(rcs_m2=-1.0)


def test_negative_tx_power_in_dbm_is_allowed():
    assert ScenarioConfig(tx_power_dbm=-10.0).tx_power_per_subcarrier_w > 0


def test_bs_may_sit_on_the_top_or_bottom_edge_anywhere_along_it():
    cfg = ScenarioConfig(bs_positions_m=((37.5, 0.0), (300.0, 100.0)), num_targets=4)
    assert cfg.num_bs == 2


# ---------------------------------------------------------------------------------------------- validation
INVALID_FIELDS = [
    # (overrides, field named in the error, text of the value in the message)
    ({"rcs_m2": -1.0}, "rcs_m2", "-1.0"),
    ({"rcs_m2": 0.0}, "rcs_m2", "0.0"),
    ({"rcs_m2": NAN}, "rcs_m2", "nan"),
    ({"codebook_size": 0}, "codebook_size", "0"),
    ({"codebook_size": 32.0}, "codebook_size", "32.0"),
    ({"num_rf": True}, "num_rf", "True"),
    ({"num_subcarriers": False}, "num_subcarriers", "False"),
    ({"num_targets": 13}, "num_targets", "13"),
    ({"num_targets": 0}, "num_targets", "0"),
    ({"num_targets": 2.5}, "num_targets", "2.5"),
    ({"num_targets": 4, "num_rf": 1, "bs_positions_m": ((0.0, 0.0), (300.0, 100.0))}, "num_targets", "4"),
    ({"num_tx_antennas": -4}, "num_tx_antennas", "-4"),
    ({"num_rx_antennas": 0}, "num_rx_antennas", "0"),
    ({"num_rx_antennas": 16}, "num_rx_antennas", "16"),
    ({"num_tracking_symbols": 0}, "num_tracking_symbols", "0"),
    ({"num_blocks": 0}, "num_blocks", "0"),
    ({"window": 1.5}, "window", "1.5"),
    ({"carrier_hz": INF}, "carrier_hz", "inf"),
    ({"carrier_hz": -28e9}, "carrier_hz", "-28000000000.0"),
    ({"subcarrier_spacing_hz": 0.0}, "subcarrier_spacing_hz", "0.0"),
    ({"subcarrier_spacing_hz": 1e6}, "subcarrier_spacing_hz", "1000000.0"),  # c / (2 df) = 150 m < 316 m
    ({"sensing_cp_s": 1e-6}, "sensing_cp_s", "1e-06"),  # below the 2.11 us round trip
    ({"sensing_cp_s": -1.0}, "sensing_cp_s", "-1.0"),
    ({"tx_power_dbm": NAN}, "tx_power_dbm", "nan"),
    ({"tx_power_dbm": INF}, "tx_power_dbm", "inf"),
    ({"noise_figure_db": -1.0}, "noise_figure_db", "-1.0"),
    ({"noise_temperature_k": 0.0}, "noise_temperature_k", "0.0"),
    ({"block_duration_s": 0.0}, "block_duration_s", "0.0"),
    ({"speed_mps": -1.0}, "speed_mps", "-1.0"),
    ({"speed_mps": NAN}, "speed_mps", "nan"),
    ({"heading_step_deg": 200.0}, "heading_step_deg", "200.0"),
    ({"heading_step_deg": -1.0}, "heading_step_deg", "-1.0"),
    ({"edge_margin_m": 60.0}, "edge_margin_m", "60.0"),
    ({"edge_margin_m": NAN}, "edge_margin_m", "nan"),
    ({"spawn_margin_m": 1.0}, "spawn_margin_m", "1.0"),  # below edge_margin_m = 2
    ({"spawn_margin_m": 55.0}, "spawn_margin_m", "55.0"),
    ({"acquisition_std_m": 0.0}, "acquisition_std_m", "0.0"),
    ({"detection_pfa": 0.0}, "detection_pfa", "0.0"),
    ({"detection_pfa": 1.0}, "detection_pfa", "1.0"),
    ({"detection_pfa": NAN}, "detection_pfa", "nan"),
    ({"range_gate_m": 0.0}, "range_gate_m", "0.0"),
    ({"fidelity": "exact"}, "fidelity", "'exact'"),
    ({"antenna_spacing_wavelengths": 0.75}, "antenna_spacing_wavelengths", "0.75"),
    ({"antenna_spacing_wavelengths": 0.0}, "antenna_spacing_wavelengths", "0.0"),
    ({"area_size_m": (300.0, 0.0)}, "area_size_m", "(300.0, 0.0)"),
    ({"area_size_m": (300.0, 100.0, 5.0)}, "area_size_m", "(300.0, 100.0, 5.0)"),
    ({"area_size_m": (NAN, 100.0)}, "area_size_m", "nan"),
    ({"area_size_m": (200.0, 100.0)}, "bs_positions_m[2]", "(300.0, 0.0)"),  # BS 2 now outside the area
    ({"bs_positions_m": ((0.0, 0.0), (400.0, 0.0))}, "bs_positions_m[1]", "(400.0, 0.0)"),
    ({"bs_positions_m": ((0.0, 0.0), (-1.0, 100.0))}, "bs_positions_m[1]", "(-1.0, 100.0)"),
    ({"bs_positions_m": ((0.0, 0.0), (150.0, 50.0))}, "bs_positions_m[1]", "(150.0, 50.0)"),  # not on an edge
    ({"bs_positions_m": ((0.0, 0.0), (0.0, NAN))}, "bs_positions_m[1]", "nan"),
    ({"bs_positions_m": ((0.0, 0.0, 0.0),)}, "bs_positions_m[0]", "(0.0, 0.0, 0.0)"),
    ({"bs_positions_m": ((0.0, 0.0), (0.0, 0.0))}, "bs_positions_m", "(0.0, 0.0)"),  # duplicate
    ({"bs_positions_m": ()}, "bs_positions_m", "()"),
]


@pytest.mark.parametrize(("overrides", "field", "value_text"), INVALID_FIELDS,
                         ids=[f"{c[1]}={c[2]}" for c in INVALID_FIELDS])
def test_every_invalid_field_raises_config_error_naming_field_value_and_rule(overrides, field, value_text):
    with pytest.raises(ConfigError) as info:
        ScenarioConfig(**overrides)
    err = info.value
    assert err.field == field
    assert field in str(err)
    assert value_text in str(err)
    assert err.rule and err.rule in str(err)


NON_NUMERIC = [
    ({"rcs_m2": "1"}, "rcs_m2"),
    ({"rcs_m2": None}, "rcs_m2"),
    ({"carrier_hz": None}, "carrier_hz"),
    ({"heading_step_deg": "15"}, "heading_step_deg"),
    ({"detection_pfa": "1e-4"}, "detection_pfa"),
    ({"bs_positions_m": (("a", 0.0),)}, "bs_positions_m"),
    ({"area_size_m": None}, "area_size_m"),
]


@pytest.mark.parametrize(("overrides", "field"), NON_NUMERIC, ids=[c[1] + "=" + repr(next(iter(c[0].values())))
                                                                    for c in NON_NUMERIC])
def test_non_numeric_values_raise_config_error_not_type_error(overrides, field):
    with pytest.raises(ConfigError) as info:
        ScenarioConfig(**overrides)
    assert field in str(info.value)


def test_yaml_exponent_without_dot_read_as_string_raises_config_error_naming_field():
    """PyYAML reads ``28e9`` as the string '28e9': the user must get a ConfigError, not a TypeError."""
    with pytest.raises(ConfigError, match="carrier_hz"):
        ScenarioConfig.from_yaml("carrier_hz: 28e9\nnum_targets: 4\n")


def test_unknown_dict_key_raises_config_error_naming_the_key():
    data = ScenarioConfig().to_dict()
    data["num_targetz"] = 4
    with pytest.raises(ConfigError) as info:
        ScenarioConfig.from_dict(data)
    assert info.value.field == "num_targetz"
    assert "num_targetz" in str(info.value)


def test_num_targets_above_large_preset_capacity_raises():
    with pytest.raises(ConfigError, match="num_targets"):
        ScenarioConfig.large(num_targets=25)
