#!/bin/bash
# Regenerates results/tracks/compare_seed$SEED.{json,md} (issue 7, tracking half): one `rl-isac compare` per
# method (signal level, 30 episodes x 100 blocks, I = 4 6 8, evaluation seeds of --seed $SEED), merged into
# one table after every method, so the table holds every method finished so far. Equivalent to
#   rl-isac compare --methods $METHODS --targets 4 6 8 --episodes 30 --blocks 100 --fidelity signal \
#     --seed $SEED [--checkpoint "dgnn-milp=results/checkpoints/dgnn-I{I}"] --json results/tracks/compare_seed$SEED.json
# (the same numbers: every (method, I) is an independent evaluation on the same world seeds).
# Usage, from the repository root:  SEED=21 bash results/tracks/run_compare.sh
set -euo pipefail
ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT"
RL=${RL:-$ROOT/.venv/bin/rl-isac}
PY=${PY:-$ROOT/.venv/bin/python}
SEED=${SEED:?set SEED}
METHODS=${METHODS:-"ekf-milp ekf-greedy dgnn-milp ekf-convex ekf-convex-ls"}
TARGETS=${TARGETS:-"4 6 8"}
EPISODES=${EPISODES:-30}
BLOCKS=${BLOCKS:-100}
NICE=${NICE:-5}
OUT=results/tracks/compare_seed$SEED.json
PARTS=results/tracks/parts_seed$SEED
mkdir -p "$PARTS"
export OMP_NUM_THREADS=1
done_methods=()
for m in $METHODS; do
  ck=()
  [[ $m == dgnn-* ]] && ck=(--checkpoint "$m=results/checkpoints/dgnn-I{I}")
  # shellcheck disable=SC2086
  nice -n "$NICE" "$RL" compare --methods "$m" "${ck[@]}" --targets $TARGETS --episodes "$EPISODES" \
    --blocks "$BLOCKS" --seed "$SEED" --fidelity signal --json "$PARTS/$m.json"
  done_methods+=("$m")
  "$PY" - "$OUT" "$TARGETS" "${done_methods[@]}" <<'PYEOF'
import json, sys
from pathlib import Path
from rl_isac.evaluation.compare import markdown_table, write_compare
out, targets, methods = sys.argv[1], [int(t) for t in sys.argv[2].split()], sys.argv[3:]
parts = [json.loads((Path(out).parent / f"parts_seed{Path(out).stem.split('seed')[-1]}" / f"{m}.json").read_text())
         for m in methods]
data = dict(parts[0])
data["results"] = [r for p in parts for r in p["results"]]
data["refused"] = [r for p in parts for r in p["refused"]]
data["methods"] = methods
data["git_revisions"] = sorted({p["git_revision"] for p in parts})
data["table_md"] = markdown_table(data["results"], data["refused"], methods, targets)
write_compare(data, out)
print(data["table_md"])
PYEOF
done
