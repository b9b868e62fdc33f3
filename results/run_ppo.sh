#!/usr/bin/env bash
# Issue 9 figures, rerunnable: the PPO ablation (I = 4, surrogate evaluation), the reference checkpoints
# results/checkpoints/ppo-I{4,6,8} and the signal-level table results/ppo_table.{json,md}.
# DGNN=dir holding dgnn-I{4,6,8} (default results/checkpoints). The committed figures were made from the DGNN
# checkpoints of revision a5a3f12 (extracted with `git show a5a3f12:results/checkpoints/dgnn-I4/model.pt` etc.).
# Steps whose output exists are skipped (delete it to redo). Uses 2 CPUs; about 45 min on a quiet 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DGNN=${DGNN:-results/checkpoints}
EPISODES=${EPISODES:-20}
RL=".venv/bin/rl-isac"
export OMP_NUM_THREADS=1
$RL ppo-ablation --targets 4 --pretrained "$DGNN/dgnn-I4" --out runs/ppo_ablation --json results/ppo_ablation.json \
    --iterations 3 --train-batch 1000 --episodes "$EPISODES" --blocks 100 --fidelity surrogate
mkdir -p results/ppo_table_inputs
for I in 4 6 8; do
  CONFIG=ppo.yaml; [ $I = 4 ] || CONFIG=ppo-long-bc.yaml   # I = 6, 8: the longer warm start (see ppo-long-bc.yaml)
  [ -d results/checkpoints/ppo-I$I/checkpoint ] || $RL train --targets $I --pretrained "$DGNN/dgnn-I$I" \
      --out results/checkpoints/ppo-I$I --config "results/checkpoints/$CONFIG" --iterations 5
  [ -f results/ppo_table_inputs/bench_I$I.json ] || $RL compare --methods ekf-convex dgnn-l2o ekf-milp dgnn-milp \
      --targets $I --episodes "$EPISODES" --blocks 100 --seed 0 --fidelity signal \
      --checkpoint "dgnn-l2o=$DGNN/dgnn-I{I}" --checkpoint "dgnn-milp=$DGNN/dgnn-I{I}" \
      --json results/ppo_table_inputs/bench_I$I.json
  [ -f results/ppo_table_inputs/ppo_I$I.json ] || $RL evaluate --method dgnn-ppo \
      --checkpoint results/checkpoints/ppo-I$I --targets $I --episodes "$EPISODES" --blocks 100 --seed 0 \
      --fidelity signal --json results/ppo_table_inputs/ppo_I$I.json
done
# the surrogate-signal gap and what PPO adds after the warm start (I = 4)
[ -f results/ppo_table_inputs/ppo_I4_surrogate.json ] || $RL evaluate --method dgnn-ppo \
    --checkpoint results/checkpoints/ppo-I4 --targets 4 --episodes "$EPISODES" --blocks 100 --seed 0 \
    --fidelity surrogate --json results/ppo_table_inputs/ppo_I4_surrogate.json
for F in signal surrogate; do
  [ -f results/ppo_table_inputs/bc_I4_$F.json ] || .venv/bin/python -m rl_isac.training.bc_eval \
      results/checkpoints/ppo-I4 $F results/ppo_table_inputs/bc_I4_$F.json "$EPISODES"
done
.venv/bin/python -m rl_isac.training.ablation table results/ppo_table.json \
    --compare results/ppo_table_inputs/bench_I{4,6,8}.json --ppo results/ppo_table_inputs/ppo_I{4,6,8}.json
