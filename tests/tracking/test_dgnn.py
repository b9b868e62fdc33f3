"""DGNN estimator: SAM layer (eqs. (6)-(8)), TAM (eq. (9)), beam head (eq. (12)), configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.utils import softmax

from rl_isac.errors import ConfigError
from rl_isac.tracking.dgnn import DGNN, DGNNConfig, SpatialAttentionLayer, beams_from_logits, dense_to_edges
from rl_isac.tracking.dgnn.model import to_tensors
from rl_isac.tracking.window import FEATURE_INDEX, NUM_FEATURES, OBS_KEYS

torch.set_num_threads(1)
M, I, W, C = 6, 4, 5, 32


def random_obs(batch: int, *, num_targets: int = I, seed: int = 0, p_detect: float = 0.4) -> dict[str, np.ndarray]:
    """Window-like arrays with random features, random detections and leading padding blocks."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(batch, W, M, num_targets, NUM_FEATURES)).astype(np.float32)
    det = rng.random((batch, W, M, num_targets)) < p_detect
    feats[..., FEATURE_INDEX["detected"]] = det
    feats[..., FEATURE_INDEX["assigned"]] = det | (rng.random(det.shape) < 0.2)
    valid = np.ones((batch, W), np.float32)
    valid[:, : rng.integers(0, W)] = 0.0
    feats[valid == 0] = 0.0
    return {
        "features": feats,
        "block_valid": valid,
        "bs_positions": np.broadcast_to(rng.random((M, 2)), (batch, M, 2)).astype(np.float32),
        "anchor": rng.random((batch, num_targets, 2)).astype(np.float32),
        "anchor_next": rng.random((batch, num_targets, 2)).astype(np.float32),
        "anchor_age": rng.random((batch, num_targets)).astype(np.float32),
        "anchor_log_std": rng.normal(size=(batch, num_targets)).astype(np.float32),
        "scales_m": np.broadcast_to(np.array([300.0, 5.0, 316.2], np.float32), (batch, 3)).copy(),
    }


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (zero-initialised heads would hide differences)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


# ---------------------------------------------------------------------------------------------- SAM layer
def test_sam_layer_batched_graph_equals_loop_over_single_graphs() -> None:
    torch.manual_seed(0)
    layer = SpatialAttentionLayer(2, NUM_FEATURES, 16, heads=2).eval()
    G, D = 5, 16
    mask = torch.rand(G, M, I) < 0.4
    mask[2] = False  # a graph without any edge
    x_bs = torch.randn(G, M, 2)
    h = torch.randn(G, I, D)
    e = torch.randn(G, M, I, NUM_FEATURES)
    ei, flat = dense_to_edges(mask, M, I)
    batched = layer(x_bs.reshape(-1, 2), h.reshape(-1, D), ei, e.reshape(-1, NUM_FEATURES)[flat]).view(G, I, D)
    for g in range(G):
        ei_g, flat_g = dense_to_edges(mask[g:g + 1], M, I)
        single = layer(x_bs[g], h[g], ei_g, e[g].reshape(-1, NUM_FEATURES)[flat_g])
        torch.testing.assert_close(batched[g], single, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched[2], h[2])  # no edges: state kept


def test_sam_layer_matches_a_dense_reference_of_eqs_6_to_8() -> None:
    torch.manual_seed(1)
    D = 8
    layer = SpatialAttentionLayer(2, 3, D, heads=1).eval()
    mask = torch.rand(M, I) < 0.5
    mask[:, 0] = True
    mask[:, 1] = False  # target 1 has no neighbour
    x_bs, h, e = torch.randn(M, 2), torch.randn(I, D), torch.randn(M, I, 3)
    ei, flat = dense_to_edges(mask[None], M, I)
    out = layer(x_bs, h, ei, e.reshape(-1, 3)[flat])
    with torch.no_grad():
        b = torch.cat([layer.mlp_x(x_bs)[:, None].expand(M, I, D // 2), layer.mlp_e(e)], -1)       # eq. (6)
        logits = layer.attn(torch.cat([h[None].expand(M, I, D), b], -1))[..., 0]                   # (M, I)
        alpha = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=0).nan_to_num(0.0)      # eq. (8)
        ref = layer.norm(torch.nn.functional.gelu(h + (alpha[..., None] * b).sum(0)))               # eq. (7)
        ref[1] = h[1]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # the PyG softmax is a per-target softmax over the incoming edges
    s = softmax(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0, 0, 1]), num_nodes=2)
    torch.testing.assert_close(s, torch.tensor([1 / (1 + np.e), np.e / (1 + np.e), 1.0]))


def test_dense_to_edges_offsets_each_graph() -> None:
    mask = torch.zeros(3, M, I, dtype=torch.bool)
    mask[0, 1, 2] = mask[2, 5, 3] = True
    ei, flat = dense_to_edges(mask, M, I)
    assert ei.tolist() == [[1, 2 * M + 5], [2, 2 * I + 3]]
    assert flat.tolist() == [1 * I + 2, 2 * M * I + 5 * I + 3]


# ---------------------------------------------------------------------------------------------- model
@pytest.mark.parametrize("cfg", [DGNNConfig(hidden_dim=16, ff_dim=32, codebook_size=C),
                                 DGNNConfig.paper(num_targets=I, hidden_dim=16, ff_dim=32, codebook_size=C)],
                         ids=["ours", "paper"])
def test_output_shapes_and_batched_equals_single(cfg: DGNNConfig) -> None:
    model = randomise(DGNN(cfg))
    obs = random_obs(3)
    with torch.no_grad():
        out = model(to_tensors(obs))
    shapes = {"u_hat": (3, I, 2), "u_tilde": (3, I, 2), "beam_logits_tx": (3, M, I, C),
              "beam_logits_rx": (3, M, I, C), "target_embedding": (3, I, cfg.hidden_dim)}
    assert {k: tuple(v.shape) for k, v in out.items()} == shapes
    for b in range(3):
        single = model.predict({k: v[b] for k, v in obs.items()})
        for key in shapes:
            np.testing.assert_allclose(single[key], out[key][b].numpy(), rtol=1e-4, atol=1e-4)


def test_permuting_targets_permutes_outputs_with_shared_weights() -> None:
    model = randomise(DGNN(DGNNConfig(hidden_dim=16, ff_dim=32)))
    obs = random_obs(2, seed=3)
    perm = np.array([2, 0, 3, 1])
    permuted = dict(obs)
    permuted["features"] = obs["features"][:, :, :, perm]
    for key in ("anchor", "anchor_next", "anchor_age", "anchor_log_std"):
        permuted[key] = obs[key][:, perm]
    with torch.no_grad():
        a, b = model(to_tensors(obs)), model(to_tensors(permuted))
    for key in ("u_hat", "u_tilde", "target_embedding"):
        torch.testing.assert_close(b[key], a[key][:, perm], rtol=1e-4, atol=1e-4)
    for key in ("beam_logits_tx", "beam_logits_rx"):
        torch.testing.assert_close(b[key], a[key][:, :, perm], rtol=1e-4, atol=1e-4)
    # one model serves any number of targets
    with torch.no_grad():
        out = model(to_tensors(random_obs(2, num_targets=7)))
    assert out["u_hat"].shape == (2, 7, 2)


@pytest.mark.parametrize("cfg", [DGNNConfig(hidden_dim=16, ff_dim=32),
                                 DGNNConfig.paper(num_targets=I, hidden_dim=16, ff_dim=32)], ids=["ours", "paper"])
def test_missing_measurements_do_not_leak_nans(cfg: DGNNConfig) -> None:
    model = randomise(DGNN(cfg)).train()
    obs = random_obs(4, seed=5)
    obs["features"][0] = 0.0                      # sample 0: no edge in any block
    obs["block_valid"][1] = 0.0                   # sample 1: only padding (just after reset)
    obs["features"][1] = 0.0
    obs["features"][2, :, :, 1, FEATURE_INDEX["detected"]] = 0.0  # sample 2: target 1 never measured
    t = to_tensors(obs)
    out = model(t)
    loss = sum(v.float().square().mean() for v in out.values())
    loss.backward()
    for key, v in out.items():
        assert torch.isfinite(v).all(), key
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_untrained_residual_model_returns_the_anchors() -> None:
    model = DGNN(DGNNConfig(hidden_dim=16, ff_dim=32)).eval()
    obs = random_obs(2)
    out = model.predict(obs)
    np.testing.assert_allclose(out["u_hat"], obs["anchor"] * 300.0, rtol=1e-6)
    np.testing.assert_allclose(out["u_tilde"], obs["anchor_next"] * 300.0, rtol=1e-6)


def test_geometry_beam_head_starts_at_the_nearest_codebook_beam() -> None:
    model = DGNN(DGNNConfig(hidden_dim=16, ff_dim=32))
    with torch.no_grad():
        model.beam_head[-1].weight.zero_()
        model.beam_head[-1].bias.zero_()
    obs = random_obs(1)
    obs["anchor_next"][0] = [[0.2, 0.1], [0.5, 0.3], [0.9, 0.2], [0.1, 0.25]]
    out = model.predict(obs)
    u_next = obs["anchor_next"][0] * 300.0
    rel = u_next[None] - obs["bs_positions"][0][:, None] * 300.0
    cos = rel[..., 0] / np.linalg.norm(rel, axis=-1)
    best = np.argmin(np.abs(cos[..., None] - (-1 + (2 * np.arange(C) + 1) / C)), axis=-1)
    np.testing.assert_array_equal(out["beam_logits_tx"][0].argmax(-1), best)
    np.testing.assert_array_equal(out["beam_logits_rx"][0].argmax(-1), best)


def test_concat_mode_rejects_another_number_of_targets() -> None:
    model = DGNN(DGNNConfig.paper(num_targets=I, hidden_dim=16, ff_dim=32))
    with pytest.raises(ValueError, match="targets"):
        model(to_tensors(random_obs(1, num_targets=I + 1)))


# ---------------------------------------------------------------------------------------------- beams
@pytest.mark.parametrize("num_symbols", [1, 2, 4, 5])
def test_beams_from_logits_take_top_k_and_pair_tx_rx(num_symbols: int) -> None:
    g = torch.Generator().manual_seed(0)
    tx = torch.randn(3, M, I, C, generator=g)
    rx = tx + 0.01 * torch.randn(3, M, I, C, generator=g)  # rankings alike (same labels)
    beams = beams_from_logits(tx, rx, num_symbols, pairing="distinct")
    assert beams.shape == (3, M, I, num_symbols, 2) and beams.dtype == torch.int64
    assert (beams[..., 0] != beams[..., 1]).all()
    top = tx.topk(num_symbols, -1).indices
    torch.testing.assert_close(beams[..., 0], top)
    assert set(beams[..., 1].unique().tolist()) <= set(rx.topk(num_symbols + 1, -1).indices.unique().tolist())
    # identical rankings: the two best beams are crossed
    same = beams_from_logits(tx, tx, 2, pairing="distinct")
    order = tx.topk(2, -1).indices
    torch.testing.assert_close(same[..., 0, 1], order[..., 1])
    torch.testing.assert_close(same[..., 1, 1], order[..., 0])
    order = tx.topk(4, -1).indices
    grid = beams_from_logits(tx, tx, 4)  # default: the world's convention
    torch.testing.assert_close(grid[..., :, 0], order[..., [0, 0, 1, 1]])
    torch.testing.assert_close(grid[..., :, 1], order[..., [0, 1, 0, 1]])


def test_grid_pairing_matches_the_worlds_beam_pairs_from_ranked() -> None:
    from rl_isac.physics.arrays import beam_pairs_from_ranked

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(M, I, C, generator=g)
    ranked = logits.topk(4, -1).indices.numpy()
    for k in (1, 2, 4):
        expected = beam_pairs_from_ranked(ranked, ranked, k)
        np.testing.assert_array_equal(beams_from_logits(logits, logits, k).numpy(), expected)


# ---------------------------------------------------------------------------------------------- config
def test_config_round_trip_and_validation_names_the_field() -> None:
    cfg = DGNNConfig.paper(num_targets=6)
    assert DGNNConfig.from_dict(cfg.to_dict()) == cfg
    for field, kwargs in [("hidden_dim", {"hidden_dim": 7}), ("num_layers", {"num_layers": 0}),
                          ("target_mode", {"target_mode": "mixed"}), ("num_targets", {"target_mode": "concat"}),
                          ("tam_heads", {"tam_heads": 3}), ("dropout", {"dropout": 1.5}),
                          ("window_anchor", {"window_anchor": "oracle"}), ("edge_features", {"edge_features": "x"})]:
        with pytest.raises(ConfigError) as err:
            DGNNConfig(**kwargs)
        assert err.value.field == field
    with pytest.raises(ConfigError) as err:
        DGNNConfig.from_dict({"hidden": 3})
    assert err.value.field == "hidden"


def test_obs_keys_are_what_the_model_reads() -> None:
    obs = random_obs(1)
    assert set(obs) == set(OBS_KEYS)
