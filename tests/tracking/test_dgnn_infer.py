"""The DGNN's lean inference paths (DGNN.infer in torch, numpy_forward in numpy) are the same function as its PyG
forward pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rl_isac.tracking.dgnn import DGNN, DGNNConfig, beams_from_logits
from rl_isac.tracking.dgnn.model import _pair_order, to_tensors
from rl_isac.tracking.dgnn.numpy_infer import numpy_forward, supports
from tests.tracking.test_dgnn import random_obs, randomise

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
CONFIGS = [DGNNConfig(hidden_dim=16, tam_heads=2, sam_heads=2, ff_dim=32), DGNNConfig(hidden_dim=16, tam_heads=4),
           DGNNConfig(hidden_dim=16, tam_heads=2, edge_features="paper", anchor_init=False, residual=False,
                      beam_input="paper"),
           DGNNConfig.paper(4, hidden_dim=8, tam_heads=2)]


def _assert_same_function(model: DGNN, obs: dict[str, torch.Tensor]) -> None:
    """``infer`` and ``numpy_forward`` equal ``forward`` to 1e-5 (relative to each output's scale); ``infer``'s SAM
    equals PyG's to float32 rounding."""
    with torch.no_grad():
        ref = model(obs)
        paths = {"infer": {k: v.numpy() for k, v in model.infer(obs).items()}}
        # Bit for bit on AVX2 CPUs; AVX-512 matmul kernels round a product's rows by its shape (the lean SAM runs
        # the BS messages once per sample), ~1 ulp of its O(1) LayerNorm outputs.
        torch.testing.assert_close(model._spatial_lean(obs), model.spatial(obs), rtol=1e-5, atol=1e-6)
    if model.cfg.target_mode == "shared":
        assert supports(model)
        paths["numpy"] = numpy_forward(model, {k: v.numpy() for k, v in obs.items()})
    else:
        assert not supports(model)
    for name, out in paths.items():
        assert out.keys() == ref.keys()
        for key, r in ref.items():
            scale = float(r.abs().max()) + 1.0
            assert out[key].dtype == np.float32 and out[key].shape == r.shape, (name, key)
            np.testing.assert_allclose(out[key], r.numpy(), rtol=1e-5, atol=1e-5 * scale, err_msg=f"{name} {key}")


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.target_mode}-{c.edge_features}-h{c.sam_heads}")
def test_infer_equals_forward_on_random_windows(cfg: DGNNConfig) -> None:
    """Random weights and windows (random detections, padding blocks, an empty block), batches 1 and 6."""
    model = randomise(DGNN(cfg), seed=3)
    for seed, batch in ((0, 1), (1, 6), (2, 6)):
        raw = random_obs(batch, seed=seed)
        raw["features"][:, -2, ..., 0] = 0.0  # a block without any detection: no edge, states kept
        _assert_same_function(model, to_tensors(raw))


def test_numpy_weights_follow_in_place_updates_and_replaced_parameters() -> None:
    """The cached numpy views see an in-place weight update (``load_state_dict``) and are rebuilt when a
    parameter is replaced by another tensor."""
    model = randomise(DGNN(DGNNConfig(hidden_dim=16, tam_heads=2)), seed=2)
    other = randomise(DGNN(DGNNConfig(hidden_dim=16, tam_heads=2)), seed=9)
    obs = random_obs(2, seed=4)
    before = numpy_forward(model, obs)
    model.load_state_dict(other.state_dict())                                 # in place
    after = numpy_forward(model, obs)
    assert not np.allclose(after["u_hat"], before["u_hat"])
    np.testing.assert_allclose(after["u_hat"], numpy_forward(other, obs)["u_hat"], rtol=0, atol=0)
    with torch.no_grad():  # an in-place update of the BS message MLP alone (its outputs are cached)
        model.sam[0].mlp_x[0].weight.mul_(1.5)
        ref = model(to_tensors(obs))
    np.testing.assert_allclose(numpy_forward(model, obs)["u_hat"], ref["u_hat"].numpy(), rtol=1e-5, atol=1e-3)
    model.head_now[2].weight = torch.nn.Parameter(2.0 * model.head_now[2].weight.detach())   # replaced
    with torch.no_grad():
        ref = model(to_tensors(obs))
    np.testing.assert_allclose(numpy_forward(model, obs)["u_hat"], ref["u_hat"].numpy(), rtol=1e-5, atol=1e-3)


def test_infer_equals_forward_with_dropout_configured_and_in_training_mode() -> None:
    """A model in training mode (dropout) takes the PyG forward pass itself; the numpy path refuses it."""
    model = randomise(DGNN(DGNNConfig(hidden_dim=16, tam_heads=2, dropout=0.3)), seed=1).train()
    assert not supports(model)
    with pytest.raises(ValueError, match="eval mode"):
        numpy_forward(model, random_obs(1, seed=5))
    obs = to_tensors(random_obs(3, seed=5))
    torch.manual_seed(0)
    a = model.infer(obs)
    torch.manual_seed(0)
    with torch.no_grad():
        b = model(obs)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize("targets", [4, 8])
def test_infer_equals_forward_on_real_windows_of_the_reference_checkpoint(targets: int) -> None:
    """The shipped phase-1 checkpoint on the windows of a surrogate episode (EKF anchor, ekf-greedy CU)."""
    from rl_isac.controllers.registry import make_controller
    from rl_isac.network import CellFreeNetwork
    from rl_isac.scenario import ScenarioConfig
    from rl_isac.tracking.dgnn.checkpoint import load_dgnn_checkpoint
    from rl_isac.tracking.window import MeasurementWindow

    ckpt = REPO / "results" / "checkpoints" / f"dgnn-I{targets}"
    if not (ckpt / "model.pt").is_file():
        pytest.skip(f"reference checkpoint {ckpt} not in this checkout")
    model, _ = load_dgnn_checkpoint(ckpt)
    model.eval()
    cfg = ScenarioConfig.paper(targets, fidelity="surrogate")
    net, cu = CellFreeNetwork(cfg), make_controller("ekf-greedy", cfg)
    window = MeasurementWindow(cfg, anchor=model.cfg.window_anchor)
    start = net.reset(11)
    action = cu.reset(start)
    window.reset(start)
    windows = []
    for _ in range(14):
        meas = net.step(action.association, action.beams, predicted_positions_m=action.prediction_m)
        action = cu.act(meas)
        window.push(meas)
        windows.append(window.as_arrays())
    batch = {k: np.stack([w[k] for w in windows]) for k in windows[0]}
    _assert_same_function(model, to_tensors(batch))
    for w in windows[::5]:  # batch 1, as the CU runs it
        _assert_same_function(model, to_tensors(w))
    out = model.predict(windows[-1], num_symbols=cfg.num_tracking_symbols)
    with torch.no_grad():
        lean = model.infer(to_tensors(windows[-1]))
    beams = beams_from_logits(lean["beam_logits_tx"], lean["beam_logits_rx"], cfg.num_tracking_symbols)[0]
    np.testing.assert_array_equal(beams.numpy(), out["beams"])  # the same beams on this episode


def _beams_two_topk(tx_logits, rx_logits, num_symbols):
    """The grid pairing as before the single-top-k form: two top-k, two gathers."""
    order = _pair_order(num_symbols, "grid")
    depth = min(tx_logits.shape[-1], max(max(a, b) for a, b in order) + 2)
    tx = tx_logits.topk(depth, dim=-1).indices[..., torch.tensor([a % depth for a, _ in order])]
    rx = rx_logits.topk(depth, dim=-1).indices[..., torch.tensor([b % depth for _, b in order])]
    return torch.stack([tx, rx], dim=-1)


@pytest.mark.parametrize("num_symbols", [1, 2, 4, 5, 9, 12])
def test_grid_beams_from_one_topk_equal_two_topk_even_with_ties(num_symbols: int) -> None:
    gen = torch.Generator().manual_seed(num_symbols)
    for C in (2, 3, 8, 32):
        for ties in (False, True):
            shape = (2, 3, 6, 4, C)
            both = torch.randint(0, 3, shape, generator=gen).float() if ties else torch.randn(shape, generator=gen)
            tx, rx = both[0], both[1]
            torch.testing.assert_close(beams_from_logits(tx, rx, num_symbols), _beams_two_topk(tx, rx, num_symbols),
                                       rtol=0, atol=0)
