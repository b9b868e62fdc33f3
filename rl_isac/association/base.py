"""The solver interface and the one problem every solver reads (:class:`Problem`).

Every solver has one verb, ``solve(info, prior_info, num_rf, detection_prob=None) -> A``, and
minimises (exactly or approximately) the same objective,
:func:`rl_isac.association.objective.expected_subset_costs`: the expected posterior
position error over detection outcomes plus ``chain_price`` per used chain. The
returned association satisfies (5c)-(5e): every target has at least one BS and
every BS at most ``min(num_rf, num_targets)`` targets. With ``chain_price == 0``
every BS uses exactly that many (adding a pair never increases the expected
error, so the full-chain form keeps the optimum); with ``chain_price > 0`` chains
stay idle where no pair is worth its price.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from rl_isac.association.constraints import chains_per_bs, check_association, check_problem_size, uses_all_chains
from rl_isac.association.objective import expected_subset_costs, validate_detection, validate_information
from rl_isac.errors import ConfigError, RlIsacError

__all__ = ["AssociationSolver", "Problem", "check_chain_price", "prepare", "finish"]


def check_chain_price(chain_price: object) -> float:
    """``chain_price`` as a float ``>= 0``; :class:`ConfigError` otherwise."""
    if isinstance(chain_price, bool) or not isinstance(chain_price, (int, float, np.floating, np.integer)) \
            or not np.isfinite(chain_price) or chain_price < 0:
        raise ConfigError("chain_price", chain_price, "must be a finite number >= 0 (the relative cut of a "
                                                      "target's expected error one RF chain must buy)")
    return float(chain_price)


@dataclass(frozen=True)
class Problem:
    """One validated association problem.

    Attributes:
        info: ``(M, I, 2, 2)`` pair information (1/m^2), symmetrised.
        prior_info: ``(I, 2, 2)`` predicted information (1/m^2), symmetrised.
        detection_prob: ``(M, I)`` in [0, 1], or None (detection assumed).
        chain_price: price of a chain (the target's cost is multiplied by ``1 + chain_price`` per BS).
        num_bs, num_targets, per_bs: ``M``, ``I`` and ``min(num_rf, I)``.
    """

    info: np.ndarray
    prior_info: np.ndarray
    detection_prob: np.ndarray | None
    chain_price: float
    num_bs: int
    num_targets: int
    per_bs: int

    @property
    def idle(self) -> bool:
        """Chains may stay idle (a positive chain price)."""
        return self.chain_price > 0

    def table(self, max_subset_size: int | None = None) -> np.ndarray:
        """``(I, 2^M)`` expected cost + chain prices of every target with every BS set (m^2)."""
        return expected_subset_costs(self.info, self.prior_info, self.detection_prob, self.chain_price,
                                     max_subset_size)

    def weighted_info(self) -> np.ndarray:
        """``p[m, i] info[m, i]``: the expected information (the convex relaxation's surrogate)."""
        if self.detection_prob is None:
            return self.info
        return self.info * self.detection_prob[..., None, None]


def prepare(info: object, prior_info: object, num_rf: int, detection_prob: object | None,
            chain_price: float) -> Problem:
    """Validate the inputs of ``solve`` (:class:`ConfigError` / :class:`RlIsacError` on bad input)."""
    info, prior_info = validate_information(info, prior_info)
    num_bs, num_targets = info.shape[:2]
    check_problem_size(num_bs, num_targets, num_rf)
    p = None if detection_prob is None else validate_detection(detection_prob, (num_bs, num_targets))
    return Problem(info, prior_info, p, check_chain_price(chain_price), num_bs, num_targets,
                   chains_per_bs(num_targets, num_rf))


def finish(association: np.ndarray, num_rf: int, problem: Problem) -> np.ndarray:
    """Guard every solver's output: (5c)-(5e), and all chains used unless chains may be idle."""
    out = check_association(association, num_rf, shape=(problem.num_bs, problem.num_targets))
    if not problem.idle and not uses_all_chains(out, num_rf):  # pragma: no cover - would be a solver bug
        raise RlIsacError(f"solver left RF chains unused: per-BS load {out.sum(axis=1).tolist()}")
    return out


class AssociationSolver(ABC):
    """One verb: ``solve(info, prior_info, num_rf, detection_prob=None) -> A``.

    Shapes:
        info: ``(num_bs, num_targets, 2, 2)`` float, pair position Fisher information (1/m^2);
        prior_info: ``(num_targets, 2, 2)`` float, predicted position information (1/m^2);
        detection_prob: ``(num_bs, num_targets)`` in [0, 1] or None;
        returns ``A``: ``(num_bs, num_targets)`` bool, ``[bs, target]``, every target covered,
        at most ``min(num_rf, num_targets)`` targets per BS (exactly that many when
        ``chain_price == 0``).

    Attributes:
        chain_price: price of one chain, the factor ``1 + chain_price`` on a target's cost per BS
            (:mod:`rl_isac.association.objective`); ``0`` keeps every chain in use.
    """

    name: ClassVar[str]
    chain_price: float = 0.0

    def problem(self, info: object, prior_info: object, num_rf: int, detection_prob: object | None) -> Problem:
        """The validated :class:`Problem` of a call with this solver's chain price."""
        return prepare(info, prior_info, num_rf, detection_prob, self.chain_price)

    @abstractmethod
    def solve(self, info: np.ndarray, prior_info: np.ndarray, num_rf: int,
              detection_prob: np.ndarray | None = None) -> np.ndarray:
        """Association ``A`` (bool, ``(num_bs, num_targets)``) for the next block.

        Raises
        ------
        ConfigError
            ``num_targets > num_bs * num_rf`` (no feasible association) or a bad ``num_rf``.
        RlIsacError
            Malformed ``info`` / ``prior_info`` / ``detection_prob``.
        """
