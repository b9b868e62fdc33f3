"""One harness for every method: fixed evaluation seeds, RMSE per block, PCRB, violations, latency."""

from rl_isac.evaluation.harness import evaluate
from rl_isac.seeds import EVAL_SEED_BASE, evaluation_seeds

__all__ = ["EVAL_SEED_BASE", "evaluate", "evaluation_seeds"]
