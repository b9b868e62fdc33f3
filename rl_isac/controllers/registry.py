"""Method registry: a name -> a CU factory. Every method the harness can evaluate is here.

Classical methods (this module):

=================  ===================================================================
``ls-nearest``     least-squares fusion, nearest-BS association, geometric beams (baseline)
``ekf-nearest``    EKF, nearest-BS association
``ekf-greedy``     EKF, greedy on the Fisher-information objective
``ekf-convex``     EKF, convex relaxation + rounding (the paper's Benchmark I)
``ekf-convex-ls``  EKF, convex relaxation + rounding + swap local search (a stronger Benchmark I)
``ekf-milp``       EKF, exact MILP over per-target BS subsets (our exact reference)
``ekf-exhaustive`` EKF, exhaustive search (the search of Benchmark III)
=================  ===================================================================

``clustered-<m>`` (``m`` one of the ``ekf-*`` above; factory argument ``clusters``, default 2): the same
composition as one sub-CU per CU cluster with handover (:mod:`rl_isac.controllers.clustered`);
``clustered-dgnn-ppo``: a policy trained with ``rl-isac train --clusters C`` (:mod:`rl_isac.rllib.cluster_controller`).

Learned methods register themselves with :func:`register` (they need ``checkpoint``);
``dgnn-ppo`` (the trained PPO module, :mod:`rl_isac.rllib.controller`) is registered here with a
factory that imports it lazily.
"""

from __future__ import annotations

from collections.abc import Callable

from rl_isac.association import DEFAULT_CHAIN_PRICE, make_solver
from rl_isac.controllers.base import Controller
from rl_isac.errors import ConfigError
from rl_isac.scenario import ScenarioConfig

Factory = Callable[..., Controller]
METHODS: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    """Add a method; ``factory(cfg, checkpoint=None, **kwargs) -> Controller``."""
    METHODS[name] = factory


def _ekf(solver: str | None, name: str | None = None, **solver_kwargs) -> Factory:
    def factory(cfg: ScenarioConfig, checkpoint: str | None = None, **kwargs) -> Controller:
        from rl_isac.controllers.composed import ComposedCU, NearestAssociation
        from rl_isac.controllers.estimators import EKFCUEstimator

        # chain_price: idle chains where no pair is worth one (the objective counts detection, issue 7)
        solver_args = {"chain_price": DEFAULT_CHAIN_PRICE, **solver_kwargs, **kwargs}
        assoc = NearestAssociation(cfg) if solver is None else make_solver(solver, **solver_args)
        return ComposedCU(cfg, EKFCUEstimator(cfg), assoc, name=name or f"ekf-{solver or 'nearest'}")

    return factory


def _ls_nearest(cfg: ScenarioConfig, checkpoint: str | None = None, **kwargs) -> Controller:
    from rl_isac.controllers.composed import ComposedCU, NearestAssociation
    from rl_isac.controllers.estimators import LeastSquaresEstimator

    return ComposedCU(cfg, LeastSquaresEstimator(cfg), NearestAssociation(cfg), name="ls-nearest")


register("ls-nearest", _ls_nearest)
register("ekf-nearest", _ekf(None))
for _solver in ("greedy", "convex", "milp", "exhaustive"):
    register(f"ekf-{_solver}", _ekf(_solver))
register("ekf-convex-ls", _ekf("convex", name="ekf-convex-ls", local_search=True))


def _dgnn_ppo(cfg: ScenarioConfig, checkpoint: str | None = None, **kwargs) -> Controller:
    """Phase-2 PPO policy (``rl-isac train``); imports the RLlib application only when built (no ray.init)."""
    from rl_isac.rllib.controller import make_ppo_controller

    return make_ppo_controller(cfg, checkpoint=checkpoint, **kwargs)


register("dgnn-ppo", _dgnn_ppo)


def _clustered(method: str) -> Factory:
    def factory(cfg: ScenarioConfig, checkpoint: str | None = None, clusters: int = 2, **kwargs) -> Controller:
        """``method`` with one sub-CU per CU cluster and handover (:mod:`rl_isac.controllers.clustered`)."""
        from rl_isac.controllers.clustered import make_clustered_controller

        return make_clustered_controller(method, cfg, clusters=clusters, **kwargs)

    return factory


for _method in ("ekf-nearest", "ekf-greedy", "ekf-convex", "ekf-convex-ls", "ekf-milp", "ekf-exhaustive"):
    register(f"clustered-{_method}", _clustered(_method))


def _clustered_dgnn_ppo(cfg: ScenarioConfig, checkpoint: str | None = None, **kwargs) -> Controller:
    """A ``rl-isac train --clusters C`` policy: one shared module over every cluster
    (:mod:`rl_isac.rllib.cluster_controller`)."""
    from rl_isac.rllib.cluster_controller import make_clustered_ppo_controller

    return make_clustered_ppo_controller(cfg, checkpoint=checkpoint, **kwargs)


register("clustered-dgnn-ppo", _clustered_dgnn_ppo)


def _load_learned() -> None:
    """Import the modules that register learned methods (torch); silently absent only if not installed."""
    import importlib

    for module in ("rl_isac.controllers.learned",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def make_controller(name: str, cfg: ScenarioConfig, checkpoint: str | None = None, **kwargs) -> Controller:
    """Build the CU registered as ``name``; unknown names raise :class:`ConfigError` listing the known ones."""
    if name not in METHODS:
        _load_learned()
    if name not in METHODS:
        raise ConfigError("method", name, f"unknown method; known methods: {sorted(METHODS)}")
    return METHODS[name](cfg, checkpoint=checkpoint, **kwargs)
