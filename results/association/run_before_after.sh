#!/bin/bash
# Before/after figure of issue 7's association half (ekf-milp, ekf-convex; I = 4, 6, 8; signal level;
# 30 episodes x 100 blocks; seeds 21 and 22). Both runs use the world and trackers of commit 5817bdf
# (before the multi-peak front end and the CU data association landed), so the only difference is the
# association: BEFORE = 5817bdf as it was (objective assumes detection, every chain used); AFTER = the
# same tree with rl_isac/association, rl_isac/physics/detection.py and the CU's two-line call
# (detection_prob = credited_detection_probability(...); solve(..., detection_prob=...)) of ASSOC_REV.
# Usage: bash results/association/run_before_after.sh [ASSOC_REV]   (from the repository root;
#        SIDES="after" reruns one side only)
set -euo pipefail
ASSOC_REV=${1:-HEAD}
ROOT=$(git rev-parse --show-toplevel)
PY=${PY:-$ROOT/.venv/bin/python}
OUT=$ROOT/results/association
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for side in before after; do
  mkdir -p "$WORK/$side"
  git -C "$ROOT" archive 5817bdf | tar -x -C "$WORK/$side"
done
rm -rf "$WORK/after/rl_isac/association"
git -C "$ROOT" archive "$ASSOC_REV" rl_isac/association rl_isac/io.py rl_isac/physics/detection.py \
  rl_isac/controllers/registry.py | tar -x -C "$WORK/after"
"$PY" - "$WORK/after/rl_isac/controllers/composed.py" <<'PYEOF'
import sys
p = sys.argv[1]
s = open(p).read()
old = """            prior_info = np.linalg.inv(self.estimator.predicted_position_covariance())
            assoc = self.associator.solve(info, prior_info, self.cfg.num_rf)"""
new = """            cov = self.estimator.predicted_position_covariance()
            prior_info = np.linalg.inv(cov)
            detection = credited_detection_probability(self.cfg, prediction_m, beams, cov)
            assoc = self.associator.solve(info, prior_info, self.cfg.num_rf, detection_prob=detection)"""
assert old in s
s = s.replace(old, new).replace("from rl_isac.physics.channel import geometry\n",
                                "from rl_isac.physics.channel import geometry\n"
                                "from rl_isac.physics.detection import credited_detection_probability\n")
open(p, "w").write(s)
PYEOF
for side in ${SIDES:-before after}; do
  for seed in 21 22; do
    (cd "$WORK/$side" && OMP_NUM_THREADS=1 PYTHONPATH="$WORK/$side" nice -n 10 "$PY" -m rl_isac.cli compare \
      --methods ekf-milp ekf-convex --targets 4 6 8 --episodes 30 --blocks 100 --seed "$seed" --fidelity signal \
      --json "$OUT/${side}_seed${seed}.json" > /dev/null 2>&1)
  done
done
"$PY" "$ROOT/results/association/summarise.py" "$OUT"
