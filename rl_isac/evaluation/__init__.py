"""One harness for every method: fixed evaluation seeds, RMSE per block, PCRB, violations, latency."""

from rl_isac.evaluation.harness import EVAL_SEED_BASE, evaluate, evaluation_seeds

__all__ = ["EVAL_SEED_BASE", "evaluate", "evaluation_seeds"]
