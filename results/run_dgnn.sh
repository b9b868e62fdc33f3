#!/bin/bash
# Regenerates the DGNN reference checkpoints and figures (issue 7, "the DGNN on the new front end"):
#   pretrain  results/checkpoints/dgnn-I{4,6,8}  (closed-loop DAgger pre-training, results/checkpoints/pretrain.yaml)
#   l2o       the dgnn-l2o head of each checkpoint (STOP-aware MILP labels of its dgnn-milp CU)
#   eval      results/table_dgnn.{json,md}: ekf-milp vs dgnn-milp vs dgnn-l2o, 30 episodes x 100 blocks, signal
#             level, evaluation seeds of --seed $SEED; results/dgnn_report_I{4,6,8}.json: dgnn-milp's DGNN
#             estimate against its own EKF anchor in the same closed loop (rl-isac dgnn-report --driver self)
# The target counts run in parallel (one process each). Usage, from the repository root:
#   bash results/run_dgnn.sh                 # all stages
#   STAGES="eval" SEED=1 bash results/run_dgnn.sh   # one stage, another set of evaluation seeds
set -euo pipefail
ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT"
RL=${RL:-$ROOT/.venv/bin/rl-isac}
PY=${PY:-$ROOT/.venv/bin/python}
STAGES=${STAGES:-"pretrain l2o eval"}
TARGETS=${TARGETS:-"4 6 8"}
SEED=${SEED:-0}
EPISODES=${EPISODES:-30}
BLOCKS=${BLOCKS:-100}
SUFFIX=$([ "$SEED" = 0 ] && echo "" || echo "_seed$SEED")
export OMP_NUM_THREADS=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
LOGS=${LOGS:-$WORK}  # where the per-process logs go (default: a temporary folder, removed at the end)
mkdir -p "$LOGS"

for stage in $STAGES; do
  pids=()
  for I in $TARGETS; do
    ck=results/checkpoints/dgnn-I$I
    case $stage in
      pretrain)
        rm -rf "$ck"
        nice -n 10 "$RL" pretrain --targets "$I" --config results/checkpoints/pretrain.yaml --out "$ck" --seed 0 \
          > "$LOGS/pretrain-I$I.log" 2>&1 &
        ;;
      l2o)
        nice -n 10 "$RL" train-l2o --checkpoint "$ck" --seed 0 --episodes 64 --epochs 15 \
          > "$LOGS/l2o-I$I.log" 2>&1 &
        ;;
      eval)
        nice -n 10 "$RL" compare --methods ekf-milp dgnn-milp dgnn-l2o --checkpoint "dgnn-milp=$ck" \
          --checkpoint "dgnn-l2o=$ck" --targets "$I" --episodes "$EPISODES" --blocks "$BLOCKS" --seed "$SEED" \
          --fidelity signal --json "$WORK/compare-I$I.json" > "$LOGS/compare-I$I.log" 2>&1 &
        pids+=($!)
        nice -n 10 "$RL" dgnn-report --checkpoint "$ck" --targets "$I" --episodes "$EPISODES" --blocks "$BLOCKS" \
          --seed "$SEED" --fidelity signal --driver self --json "results/dgnn_report_I$I$SUFFIX.json" \
          > "$LOGS/report-I$I.log" 2>&1 &
        ;;
      *) echo "unknown stage $stage" >&2; exit 2 ;;
    esac
    pids+=($!)
  done
  status=0
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  tail -n 3 "$LOGS"/*.log
  [ $status = 0 ] || { echo "stage $stage failed" >&2; exit 1; }
  if [ "$stage" = eval ]; then
    "$PY" - "$WORK" "results/table_dgnn$SUFFIX.json" $TARGETS <<'PYEOF'
import json, sys
from pathlib import Path
from rl_isac.evaluation.compare import markdown_table, write_compare
work, out, targets = Path(sys.argv[1]), sys.argv[2], [int(t) for t in sys.argv[3:]]
parts = [json.loads((work / f"compare-I{t}.json").read_text()) for t in targets]
methods = ["ekf-milp", "dgnn-milp", "dgnn-l2o"]
results = [r for p in parts for r in p["results"]]
refused = [r for p in parts for r in p["refused"]]
data = {**parts[0], "results": results, "refused": refused, "table_md": markdown_table(results, refused, methods, targets)}
write_compare(data, out)
print(data["table_md"])
PYEOF
  fi
done
