"""Behaviour-cloning warm start of the one shared module of several CU clusters (issue 11).

The one-CU warm start (:mod:`rl_isac.rllib.warm_start`) fits the actor to an expert CU's associations; with
``clusters = C > 1`` the env has ``C`` agents ``cu_c`` that share one ``cu_policy`` module over a cluster's
``M_c`` BSs and ``K`` target slots (:mod:`rl_isac.rllib.env`, "Several clusters"). Here the expert is the
clustered CU the clustered evaluation runs (:class:`rl_isac.controllers.clustered.ClusteredCU`: each cluster's
sub-CU, EKF + association solver (``ekf-milp``: the exact MILP) + geometric beams, over its BSs and the targets it
owns), and the data of every agent is pooled: one sample per cluster and block.

Data (:func:`collect_clusters`): episodes on *training* seeds (``training_world_seed(seed, split=2, e)``, the
one-CU warm start's split; never evaluation seeds). The CU side is the env's own
:class:`~rl_isac.rllib.env.ClusterObserver` (clustered EKF with ownership, handover and the foreign-echo exchange,
the cluster windows, the observations): the expert decides *on that same tracker* (``ClusteredCU(tracker=...)``,
:meth:`~rl_isac.controllers.clustered.ClusteredCU.decide`), so its sub-actions are in the observation's slot
coordinates by construction. Per block and cluster ``c``: the observation of agent ``cu_c`` (with
``target_valid``), the expert's association of the cluster restricted to its BSs and slots as the canonical
step sequence over the slots (:func:`rl_isac.clusters.cluster_sub_actions`: pairs BS-major, then STOPs; empty
slots ``target_valid = 0`` are never named, exactly the env's rule), and the discounted return of the agent's
reward (eq. (5a) over its own targets on the expert's estimate, or the Fisher / mix reward of the env). The world
is probed with the range gates at the tracker's prediction, as the env does.

DAgger (``policy``): the world executes the cloned module's greedy pairs of every cluster (checked with
:func:`rl_isac.clusters.check_cluster_pairs`, the env's exact test) with the expert's beams, while the labels stay
the expert's at the visited states.

Fit (:func:`behaviour_clone_clusters`): the one-CU fit exactly (:func:`rl_isac.rllib.warm_start._fit`: the
order-free set NLL :func:`~rl_isac.rllib.warm_start.set_nll`, which starts from the empty slots covered and chosen
like the module's decoders, plus the critic's regression), on the pooled samples. Reports the greedy pair recall
and the exact-association rate on held-out expert-driven episodes, and the same on the training states.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from rl_isac.association.objective import association_cost
from rl_isac.clusters import check_cluster_pairs, cluster_sub_actions
from rl_isac.controllers.clustered import CLUSTERABLE, ClusteredCU
from rl_isac.errors import ConfigError
from rl_isac.network import CellFreeNetwork
from rl_isac.rllib.warm_start import _concat, _encode_all, _fit, greedy_accuracy
from rl_isac.seeds import training_world_seed
from rl_isac.tracking.window import stack_observations

ClusterPolicy = Callable[[list, np.ndarray], np.ndarray]
"""``(observations of the C clusters, slots (C, K)) -> global association (M, I) bool`` (DAgger's executed pairs)."""


def clustered_expert(env_config: dict, expert: str, tracker) -> ClusteredCU:
    """The clustered version of ``expert`` (one of :data:`rl_isac.controllers.clustered.CLUSTERABLE`) deciding on
    ``tracker`` (the env's :class:`~rl_isac.clusters.ClusteredEKF`), with the env's layout."""
    from rl_isac.controllers.clustered import make_clustered_controller

    if expert not in CLUSTERABLE:
        raise ConfigError("bc_expert", expert, f"has no clustered version; with clusters the warm start's expert is "
                                               f"one of {list(CLUSTERABLE)} (e.g. ekf-milp)")
    layout = tracker.layout
    return make_clustered_controller(expert, tracker.cfg, clusters=layout.num_clusters, capacity=layout.capacity,
                                     hysteresis_m=layout.hysteresis_m, area=layout.area, tracker=tracker)


def collect_clusters(env_config: dict, expert: str, episodes: int, seed: int, gamma: float, first_episode: int = 0,
                     policy: ClusterPolicy | None = None, reward: tuple[float, float, bool] = (0.0, 1.0, False)
                     ) -> dict[str, np.ndarray]:
    """Expert-labelled samples of every cluster (module docstring), pooled.

    Returns:
        ``obs`` (stacked agent observations, ``N = episodes * (blocks + 1) * C``), ``pairs (N, J)`` int64 (the
        expert's canonical sub-actions over the cluster's slots), ``returns (N,)`` float32 (the agent's discounted
        return from that block), ``cluster (N,)`` int64.
    """
    from rl_isac.rllib.env import ClusterObserver, env_layout, env_scenario

    w, reward_scale, normalize = reward
    cfg = env_scenario(env_config)
    layout = env_layout(env_config, cfg)
    if layout.num_clusters < 2:
        raise ConfigError("clusters", layout.num_clusters, "the clustered warm start needs clusters >= 2 "
                                                           "(one CU: rl_isac.rllib.warm_start)")
    C, R, Q = layout.num_clusters, cfg.num_rf, cfg.num_blocks
    observer = ClusterObserver(cfg, layout)
    trk = observer.tracker
    cu = clustered_expert(env_config, expert, trk)
    obs, pairs, returns, cluster = [], [], [], []
    for e in range(first_episode, first_episode + episodes):
        net = CellFreeNetwork(cfg)
        acq = net.reset(training_world_seed(seed, 2, e))
        observer.reset(acq)
        rewards: list[list[float]] = [[] for _ in range(C)]
        first = len(obs)
        for q in range(Q + 1):
            views = observer.observations(q, Q)
            action = cu.decide()
            slots = trk.slots.copy()
            err2 = np.sum((net.positions_m - action.estimate_m) ** 2, axis=1) if q else np.zeros(cfg.num_targets)
            executed = action.association if policy is None else policy(views, slots)
            for c in range(C):
                valid = slots[c] >= 0
                bs = layout.bs_array(c)
                a = np.zeros((bs.size, layout.capacity), bool)
                a[:, valid] = action.association[np.ix_(bs, slots[c][valid])]
                obs.append(views[c])
                pairs.append(cluster_sub_actions(a, valid, R))
                cluster.append(c)
                fisher = 0.0
                if w and valid.any():
                    info, prior = observer.cluster_info[c]
                    fisher = float(association_cost(executed[np.ix_(bs, slots[c][valid])], info, prior))
                rewards[c].append(-reward_scale * ((1.0 - w) * float(err2[slots[c][valid]].sum()) + w * fisher))
            meas = net.step(executed, action.beams, predicted_positions_m=trk.predicted_position())
            observer.push(meas)
        ret = np.zeros((Q + 1, C))
        acc = np.zeros(C)
        for q in range(Q, -1, -1):
            acc = np.array([rewards[c][q] for c in range(C)]) + gamma * acc
            ret[q] = acc
        assert len(obs) - first == (Q + 1) * C
        returns.extend(ret.reshape(-1).tolist())  # block-major, cluster-minor: the order of obs
    returns_arr = np.asarray(returns, np.float32)
    if normalize:
        returns_arr = returns_arr / np.float32(np.std(returns_arr) + 1e-8)
    return {"obs": stack_observations(obs), "pairs": np.stack(pairs).astype(np.int64), "returns": returns_arr,
            "cluster": np.asarray(cluster, np.int64)}


def cluster_greedy_policy(module, layout) -> ClusterPolicy:
    """DAgger's executed association: the module's greedy pairs of every cluster (one batched inference pass),
    each checked against the exact padded mask (:func:`rl_isac.clusters.check_cluster_pairs`), as a global
    ``(M, I)`` association."""

    @torch.no_grad()
    def act(views: list, slots: np.ndarray) -> np.ndarray:
        batch = {Columns.OBS: {k: torch.from_numpy(np.stack([v[k] for v in views])) for k in views[0]}}
        out = module.forward_inference(batch)[Columns.ACTIONS]["pairs"].numpy()
        assoc = np.zeros((sum(len(g) for g in layout.bs_index), layout.num_targets), bool)
        for c in range(layout.num_clusters):
            valid = slots[c] >= 0
            bs = layout.bs_array(c)
            a = check_cluster_pairs(out[c], bs.size, layout.capacity, layout.num_rf, valid)
            assoc[np.ix_(bs, slots[c][valid])] = a[:, valid]
        return assoc

    return act


def _strip(data: dict) -> dict:
    return {k: data[k] for k in ("obs", "pairs", "returns")}


def behaviour_clone_clusters(module, env_config: dict, *, expert: str = "ekf-milp", episodes: int = 24,
                             val_episodes: int = 4, epochs: int = 20, lr: float = 1e-3, minibatch: int = 128,
                             seed: int = 0, gamma: float = 0.95, value_weight: float = 0.5, dagger_rounds: int = 0,
                             reward: tuple[float, float, bool] = (0.0, 1.0, False), echo=print) -> dict:
    """Fit the shared ``module`` (actor and critic) in place on the pooled clusters' expert samples; returns the
    metrics (as :func:`rl_isac.rllib.warm_start.behaviour_clone`'s, plus ``train_accuracy`` on the training states).

    ``dagger_rounds``: after the fit, this many rounds of ``episodes // 2`` episodes driven by the module's greedy
    pairs (:func:`cluster_greedy_policy`), labelled by the expert, aggregated, refitted (validation stays on
    expert-driven episodes).
    """
    from rl_isac.rllib.env import env_layout, env_scenario

    if getattr(module, "detection_features", False) or getattr(module, "milp_features", False):
        raise ConfigError("detection_features", True, "the clustered observation has no pair_detect / pair_milp")
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    layout = env_layout(env_config, env_scenario(env_config))
    train = collect_clusters(env_config, expert, episodes, seed, gamma, reward=reward)
    val = collect_clusters(env_config, expert, val_episodes, seed, gamma, first_episode=episodes, reward=reward)
    collect_s = time.perf_counter() - t0
    echo(f"clustered warm start: {len(train['pairs'])} samples ({episodes} episodes x {layout.num_clusters} "
         f"clusters) of clustered {expert}, {len(val['pairs'])} held out; collected in {collect_s:.0f} s")
    train, val = _strip(train), _strip(val)
    enc_val = _encode_all(module, val)
    params = [p for n, p in module.named_parameters() if p.requires_grad and not n.startswith("dgnn.")]
    opt = torch.optim.Adam(params, lr=lr)
    history: list[dict] = []
    first = episodes + val_episodes
    for rnd in range(dagger_rounds + 1):
        if rnd:
            t1 = time.perf_counter()
            module.eval()
            n_new = max(1, episodes // 2)
            new = collect_clusters(env_config, expert, n_new, seed, gamma, first_episode=first,
                                   policy=cluster_greedy_policy(module, layout), reward=reward)
            first += n_new
            train = _concat(train, _strip(new))
            collect_s += time.perf_counter() - t1
            echo(f"dagger round {rnd}: {len(new['pairs'])} policy-driven samples, {len(train['pairs'])} in all")
        history += _fit(module, train, val, enc_val, opt, params, epochs, minibatch, seed + rnd, value_weight, echo,
                        rnd)
    module.eval()
    train_acc = greedy_accuracy(module, train, _encode_all(module, train))
    return {"expert": f"clustered-{expert}", "clusters": layout.num_clusters, "episodes": episodes,
            "val_episodes": val_episodes, "samples": len(train["pairs"]), "dagger_rounds": dagger_rounds,
            "collect_s": collect_s, "wall_s": time.perf_counter() - t0, "history": history,
            "returns_mean": float(np.mean(train["returns"])), "final": history[-1] if history else {},
            "train_accuracy": train_acc}


__all__ = ["clustered_expert", "collect_clusters", "cluster_greedy_policy", "behaviour_clone_clusters"]
