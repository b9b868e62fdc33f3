#!/usr/bin/env bash
# Issue 9 figures, rerunnable: the PPO ablation (I = 4, surrogate evaluation), the reference checkpoints
# results/checkpoints/ppo-I{4,6,8} and the signal-level table results/ppo_table.{json,md} (evaluation seeds 0 and 1).
# DGNN=dir holding dgnn-I{4,6,8} (default results/checkpoints: the committed closed-loop DGNN checkpoints; the
# ablation's committed figures were made from the DGNN checkpoints of revision a5a3f12).
# Recipe: rl_isac.evaluation.reproduce.SHIPPED_PPO_CONFIGS (ppo-long-bc-milp.yaml at every I since 2026-12-04 =
# ppo-long-bc + the actor's detection and MILP features, chosen on training-side worlds, results/ppo_dev/dev_I8.md,
# dev_I4_lbm.md; I = 6 had ppo-long-bc.yaml before, see SHIPPED_PPO_CONFIGS). The committed ppo-I{6,8} are copies of results/full/ppo-I{I} (not in git), trained by
# `make reproduce`'s training stage (seed 0, revision 68b9c22) and copied before any evaluation; ppo-I4 was trained
# by `rl-isac train` with this recipe (its train_config.json says where and when), and results/full's dgnn-ppo-I4
# cell was recomputed for it with `rl-isac reproduce --ppo-checkpoint`, so evaluation seed 0 is the full profile's
# cells at every I; PPO_S0_TARGETS (default none) recomputes a seed-0 dgnn-ppo cell here for a
# checkpoint newer than the full run's.
# Steps whose output exists are skipped (delete it to redo). One process at a time; OMP_NUM_THREADS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
DGNN=${DGNN:-results/checkpoints}
EPISODES=${EPISODES:-30}
# Evaluation seed 0 comes from the full reproduce profile's cells (make reproduce: 50 episodes, the same
# checkpoints) when results/full/cells holds them; SEEDS lists the seeds computed here (30 episodes each).
SEEDS=${SEEDS:-"1"}; [ -d results/full/cells ] || SEEDS="0 $SEEDS"
ORDER=${ORDER:-"8 6 4"}
RL=".venv/bin/rl-isac"
export OMP_NUM_THREADS=1
[ -f results/ppo_ablation.json ] || $RL ppo-ablation --targets 4 --pretrained "$DGNN/dgnn-I4" --out runs/ppo_ablation \
    --json results/ppo_ablation.json --iterations 3 --train-batch 1000 --episodes 20 --blocks 100 --fidelity surrogate
mkdir -p results/ppo_table_inputs
CMP=(); PPO=(); CELLS=(); [ -d results/full/cells ] && CELLS=(--cells results/full/cells)
for I in $ORDER; do
  CONFIG=ppo-long-bc-milp.yaml                       # every I: longer warm start + detection and MILP features
  [ -d results/checkpoints/ppo-I$I/checkpoint ] || $RL train --targets $I --pretrained "$DGNN/dgnn-I$I" \
      --out results/checkpoints/ppo-I$I --config "results/checkpoints/$CONFIG" --iterations 5
  for S in $SEEDS; do
    B=results/ppo_table_inputs/bench_I${I}_s$S.json; P=results/ppo_table_inputs/ppo_I${I}_s$S.json
    [ -f $B ] || $RL compare --methods ekf-convex dgnn-l2o ekf-milp dgnn-milp \
        --targets $I --episodes "$EPISODES" --blocks 100 --seed $S --fidelity signal \
        --checkpoint "dgnn-l2o=$DGNN/dgnn-I{I}" --checkpoint "dgnn-milp=$DGNN/dgnn-I{I}" --json $B
    [ -f $P ] || $RL evaluate --method dgnn-ppo --checkpoint results/checkpoints/ppo-I$I --targets $I \
        --episodes "$EPISODES" --blocks 100 --seed $S --fidelity signal --json $P
    CMP+=("$B"); PPO+=("$P")
  done
  if [ -d results/full/cells ] && [[ " ${PPO_S0_TARGETS:-} " == *" $I "* ]]; then  # newer than the full cell
    P=results/ppo_table_inputs/ppo_I${I}_s0.json
    [ -f $P ] || $RL evaluate --method dgnn-ppo --checkpoint results/checkpoints/ppo-I$I --targets $I \
        --episodes 50 --blocks 100 --seed 0 --fidelity signal --json $P
    PPO+=("$P")
  fi
done
# GAP=1: the surrogate-signal gap and what PPO adds after the warm start (I = 4, seed 0, 20 episodes)
if [ "${GAP:-0}" = 1 ]; then
  [ -f results/ppo_table_inputs/ppo_I4_surrogate.json ] || $RL evaluate --method dgnn-ppo \
      --checkpoint results/checkpoints/ppo-I4 --targets 4 --episodes 20 --blocks 100 --seed 0 \
      --fidelity surrogate --json results/ppo_table_inputs/ppo_I4_surrogate.json
  for F in signal surrogate; do
    [ -f results/ppo_table_inputs/bc_I4_$F.json ] || .venv/bin/python -m rl_isac.training.bc_eval \
        results/checkpoints/ppo-I4 $F results/ppo_table_inputs/bc_I4_$F.json 20
  done
fi
.venv/bin/python -m rl_isac.training.ablation table results/ppo_table.json --compare "${CMP[@]}" --ppo "${PPO[@]}" \
    "${CELLS[@]}"
