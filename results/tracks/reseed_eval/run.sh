#!/usr/bin/env bash
# Issue 7, re-seeded search (EKFSettings.search_reseed): the benchmark CUs on evaluation seeds, the revision before
# (3614b17, the coasted search) against this one, same seeds and worlds. Needs a worktree of the old revision:
#   git worktree add /work/old 3614b17
# Usage: bash results/tracks/reseed_eval/run.sh SEED LABEL SRC_DIR
# runs the code of SRC_DIR (its own checkout: `python -m` puts the working directory first on sys.path) with this
# checkout's DGNN and PPO checkpoints, and writes results/tracks/reseed_eval/<LABEL>_s<SEED>.json (compare) and
# <LABEL>_ppo_I<I>_s<SEED>.json (evaluate dgnn-ppo).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
SEED=$1; LABEL=$2; SRC=$(cd "$3" && pwd)
export OMP_NUM_THREADS=1
DIR=$ROOT/results/tracks/reseed_eval; CK=$ROOT/results/checkpoints
cd "$SRC"
OUT=$DIR/${LABEL}_s$SEED.json
[ -f "$OUT" ] || "$ROOT/.venv/bin/python" -m rl_isac.cli compare --methods ekf-milp dgnn-milp ekf-convex dgnn-l2o \
    --targets 6 8 --episodes 30 --blocks 100 --seed "$SEED" --fidelity signal \
    --checkpoint "dgnn-milp=$CK/dgnn-I{I}" --checkpoint "dgnn-l2o=$CK/dgnn-I{I}" --json "$OUT"
for I in 6 8; do  # the shipped PPO checkpoints (trained before this tracker rule) on the same worlds
  P=$DIR/${LABEL}_ppo_I${I}_s$SEED.json
  [ -f "$P" ] || "$ROOT/.venv/bin/python" -m rl_isac.cli evaluate --method dgnn-ppo --checkpoint "$CK/ppo-I$I" \
      --targets $I --episodes 30 --blocks 100 --seed "$SEED" --fidelity signal --json "$P"
done
