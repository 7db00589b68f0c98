#!/usr/bin/env bash
# On the trained checkout: the whole Table-2 grid through DVC's queue, at a tiny budget.
# In a copy: commit a 1 + 1-epoch budget and `dvc repro` it (the Table-1 runs the grid's reused
# rows take), queue every row with `amr ablations queue`, run them with `dvc exp run --run-all`,
# write Table 2 with `amr ablations table`, and check every row of reports/table2.{md,csv,tex}.
set -euo pipefail
export DVC_NO_ANALYTICS=1
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$REPO/.venv/bin:$PATH"
WORK=$(mktemp -d)
cleanup() {  # stop the queue's worker before its workspace goes
  [ -d "$WORK/copy/.dvc" ] && (cd "$WORK/copy" && dvc queue stop --kill >/dev/null 2>&1 || true)
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
git -C "$REPO" config user.email >/dev/null || git -C "$REPO" config user.email ci@localhost
git -C "$REPO" config user.name >/dev/null || git -C "$REPO" config user.name ci

mkdir "$WORK/copy"
tar -C "$REPO" --exclude=./.venv -cf - . | tar -C "$WORK/copy" -xf -
cd "$WORK/copy"
git checkout -q -- .
dvc checkout -q --force dvc.yaml
start=$(date +%s)
python - <<'PY'
from dvc.utils.hydra import apply_overrides
apply_overrides("params.yaml", ["train.pretrain.epochs=1", "train.finetune.epochs=1"])
PY
dvc repro -q > "$WORK/repro.log" 2>&1 || { tail -50 "$WORK/repro.log"; fail "dvc repro at 1 + 1 epochs"; }
git add -A dvc.lock params.yaml metrics >/dev/null
git commit -qm "Table 1 at 1 + 1 epochs"

amr ablations queue | tee "$WORK/queue.log"
queued=$(grep -c " exp run --queue " "$WORK/queue.log" || true)
[ "$queued" -ge 10 ] || fail "only $queued rows queued"
# `--run-all` starts one worker and follows each row's log until the queue is empty. Polling
# `dvc queue status` instead asks the worker for its state through celery's file broker, which
# can race the worker's own reads and stop it (JSONDecodeError; treeverse/dvc-task#73).
dvc exp run --run-all -j 1 > "$WORK/grid.log" 2>&1 || { tail -50 "$WORK/grid.log"; fail "dvc exp run --run-all"; }
dvc queue status
failed=$(dvc queue status 2>/dev/null | grep -cE " Failed *$" || true)
if [ "$failed" != 0 ]; then
  for name in $(dvc queue status | awk "/ Failed *$/{print \$2}"); do dvc queue logs "$name" | tail -20; done
  fail "$failed of $queued experiments failed"
fi
succeeded=$(dvc queue status 2>/dev/null | grep -cE " Success *$" || true)
[ "$succeeded" = "$queued" ] || fail "$succeeded of $queued experiments succeeded"
echo "grid: $queued experiments in $(( $(date +%s) - start )) s (with the 1 + 1-epoch Table 1)"

amr ablations table > "$WORK/table.log" || { cat "$WORK/table.log"; fail "amr ablations table"; }
cat reports/table2.md
python - <<'PY'
import csv

from amr.reporting import ablations
from amr.reporting.tables import tex_escape

rows = list(csv.DictReader(open("reports/table2.csv", encoding="utf-8")))
assert len(rows) == len(ablations.GRID), f"{len(rows)} rows in table2.csv, {len(ablations.GRID)} in the grid"
md = open("reports/table2.md", encoding="utf-8").read()
tex = open("reports/table2.tex", encoding="utf-8").read()
for variant, row in zip(ablations.GRID, rows):
    assert row["system"] == variant.label, (row["system"], variant.label)
    for metric in ("R1@0.5", "R1@0.7", "mAP", "mAP@0.5", "mAP@0.75"):
        float(row[metric])  # a number, not an empty cell
    if variant.same_as is None:
        assert row["run"] == variant.name, row
    elif variant.same_as in [v.name for v in ablations.GRID]:
        assert row["run"].startswith("reuses "), row
    else:
        assert row["run"] == f"reuses Table 1: {variant.same_as}", row
    if not variant.bold:  # every other row: the ΔR1@0.7 interval against the selected row
        assert row["R1@0.7 mark"].startswith("(Δ ") and "[" in row["R1@0.7 mark"], row
    line = next(l for l in md.splitlines() if l.startswith(f"| {variant.label} ") or
                l.startswith(f"| **{variant.label}** "))
    assert row["R1@0.7"] in line and row["run"] in line, line
    assert tex_escape(row["run"]) in tex, row["run"]
print(f"table2: {len(rows)} rows checked in md, csv and tex")
PY
echo "Table-2 check passed"
