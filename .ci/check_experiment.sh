#!/usr/bin/env bash
# After `dvc repro`: commit the results, run `dvc exp run -S cascade.kappa=0.1`, and check that
# exactly the slot-3/slot-4 stages (and the analysis, tables and package after them) ran and that
# the slot-3 weights changed.
set -euo pipefail
export DVC_NO_ANALYTICS=1
DVC=.venv/bin/dvc
git config user.email >/dev/null || git config user.email ci@localhost
git config user.name >/dev/null || git config user.name ci
git add -A dvc.lock metrics >/dev/null
git commit -qm "pipeline results" || true
before=$(sha256sum runs/finetune/slot3/seed-2023/best.pt | cut -d' ' -f1)
PATH="$PWD/.venv/bin:$PATH" $DVC exp run -S cascade.kappa=0.1 2>&1 | tee /tmp/exp.log
ran=$(grep -oE "Running stage '[^']+'" /tmp/exp.log | sed -E "s/Running stage '([^']+)'/\1/" | sort | tr '\n' ' ')
echo "stages re-run: $ran"
for s in $ran; do
  case "$s" in
    pretrain-slot3|finetune-slot3@*|predict-slot3@*|fuse-slot4|evaluate-slot3|evaluate-slot4|analysis|tables|package) ;;
    *) echo "FAIL: stage $s re-ran after a cascade.kappa change"; exit 1 ;;
  esac
done
echo "$ran" | grep -q "finetune-slot3@2023" || { echo "FAIL: slot 3 was not re-trained"; exit 1; }
after=$(sha256sum runs/finetune/slot3/seed-2023/best.pt | cut -d' ' -f1)
[ "$before" != "$after" ] || { echo "FAIL: slot-3 weights unchanged after cascade.kappa=0.1"; exit 1; }
$DVC exp show --no-pager --md 2>/dev/null | head -20 || true
echo "experiment check passed"
