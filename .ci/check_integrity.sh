#!/usr/bin/env bash
# On the trained checkout (after `make repro` and .ci/check_experiment.sh committed its results),
# each in its own copy: what DVC records is what ran.
#  1. `dvc exp run -S train.batch_size=8` (a key the demo preset sets; at 1 + 1 epochs, to keep
#     CI short) retrains with batch 8: the runs record it, the metrics change, Table 1 names the
#     budget. Fewer epochs than the persisted run holds train afresh (not "already trained").
#  2. A comment in amr/model changes nothing; a one-line semantic change retrains from scratch.
#  3. A new system in params.yaml + `amr pipeline sync` runs through `dvc repro` to Table 1.
set -euo pipefail
export DVC_NO_ANALYTICS=1
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$REPO/.venv/bin:$PATH"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
fresh() {  # a copy of the trained checkout (without the virtualenv) at its last commit
  rm -rf "$WORK/copy" && mkdir "$WORK/copy"
  tar -C "$REPO" --exclude=./.venv -cf - . | tar -C "$WORK/copy" -xf -
  cd "$WORK/copy"
  git checkout -q -- .
  dvc checkout -q --force dvc.yaml
  dvc repro -q dvc.yaml >/dev/null  # the tables (not cached) of the committed results
  [ "$(dvc status dvc.yaml --json)" = "{}" ] || { dvc status dvc.yaml; fail "the copy is not up to date"; }
}
ran() { grep -oE "Running stage '[^']+'" "$1" | sed -E "s/Running stage '([^']+)'/\1/" | sort | tr '\n' ' '; }
json() { python -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {'d': d}))" "$@"; }
pretrain_epochs() { python -c "import yaml; print(yaml.safe_load(open('params.yaml'))['train']['pretrain']['epochs'])"; }
epochs=$(cd "$REPO" && pretrain_epochs)

echo "== 1. dvc exp run -S train.batch_size=8 (at 1 + 1 epochs)"
fresh
cp metrics/slot3.json "$WORK/slot3.before.json"
dvc exp run -S train.batch_size=8 -S train.pretrain.epochs=1 -S train.finetune.epochs=1 > "$WORK/batch.log" 2>&1 || { cat "$WORK/batch.log"; fail "experiment"; }
echo "re-ran: $(ran "$WORK/batch.log")"
for run in runs/pretrain/baseline runs/finetune/slot1/seed-2023 runs/finetune/slot3/seed-42; do
  [ "$(json $run/system_info.json "d['config']['train']['batch_size']")" = 8 ] || fail "$run: batch size not 8"
  [ "$(json $run/metrics.json "d['epochs_done']")" = 1 ] || fail "$run: not 1 epoch"
done
cmp -s metrics/slot3.json "$WORK/slot3.before.json" && fail "slot-3 metrics unchanged after retraining"
head -n 1 reports/table1.md | grep -q "demo + .*train.batch_size=8" || fail "Table 1 does not name the budget"
echo "slot3 R1@0.7: $(json "$WORK/slot3.before.json" "d['R1@0.7']") at batch 16, $(json metrics/slot3.json "d['R1@0.7']") at batch 8, 1 + 1 epochs"
head -n 1 reports/table1.md
fresh
fewer=$((epochs - 1))
sed -i "0,/^    epochs: $epochs /s//    epochs: $fewer /" params.yaml  # the first is train.pretrain.epochs
[ "$(pretrain_epochs)" = "$fewer" ] || fail "params.yaml: train.pretrain.epochs not lowered"
dvc repro pretrain-baseline > "$WORK/fewer.log" 2>&1 || { cat "$WORK/fewer.log"; fail "repro with fewer epochs"; }
grep -q "epochs: $epochs trained -> $fewer asked); starting over" "$WORK/fewer.log" || { cat "$WORK/fewer.log"; fail "fewer epochs: not trained afresh"; }
[ "$(json runs/pretrain/baseline/metrics.json "d['epochs_done']")" = "$fewer" ] || fail "pretrain-baseline: not $fewer epochs"
echo "fewer epochs: pretrain-baseline trained afresh for $fewer"

echo "== 2. code changes"
fresh
best=$(sha256sum runs/pretrain/baseline/best.pt | cut -d' ' -f1)
digest=$(json runs/pretrain/baseline/system_info.json "d['code_digest']")
sed -i 's/^import torch$/import torch  # a comment only/' amr/model/transformer.py
dvc repro pretrain-baseline > "$WORK/comment.log" 2>&1 || { cat "$WORK/comment.log"; fail "repro after a comment"; }
grep -q "nothing to do" "$WORK/comment.log" || { cat "$WORK/comment.log"; fail "a comment retrained"; }
[ "$(sha256sum runs/pretrain/baseline/best.pt | cut -d' ' -f1)" = "$best" ] || fail "a comment changed the weights"
sed -i 's/{"prelu": nn.PReLU,/{"prelu": lambda: nn.PReLU(init=0.2),/' amr/model/transformer.py
grep -q "nn.PReLU(init=0.2)" amr/model/transformer.py || fail "the patch did not apply"
dvc status pretrain-baseline | grep -q "modified:.*amr/model" || fail "dvc status does not see amr/model"
dvc repro pretrain-baseline > "$WORK/code.log" 2>&1 || { cat "$WORK/code.log"; fail "repro after a code change"; }
grep -q "starting over" "$WORK/code.log" || { cat "$WORK/code.log"; fail "no restart after a code change"; }
grep -m1 "starting over" "$WORK/code.log" | cut -c1-160
[ "$(grep -c '^pretrain epoch' "$WORK/code.log")" = "$epochs" ] || fail "not all $epochs epochs were trained again"
[ "$(sha256sum runs/pretrain/baseline/best.pt | cut -d' ' -f1)" != "$best" ] || fail "weights unchanged"
[ "$(json runs/pretrain/baseline/system_info.json "d['code_digest']")" != "$digest" ] || fail "code digest unchanged"

echo "== 3. a new system"
fresh
python - <<'PY'
text = open("params.yaml").read()
open("params.yaml", "w").write(text.replace(
    "  slot4:\n", "  slot2b:\n    coarse: {enabled: true}\n    mamba: {enabled: true}\n  slot4:\n", 1))
PY
dvc repro > "$WORK/stale.log" 2>&1 && fail "a stale dvc.yaml ran"
grep -q "amr pipeline sync" "$WORK/stale.log" || { cat "$WORK/stale.log"; fail "no hint to sync"; }
python -m amr pipeline sync
dvc repro > "$WORK/slot2b.log" 2>&1 || { cat "$WORK/slot2b.log"; fail "repro with slot2b"; }
stages=$(ran "$WORK/slot2b.log")
echo "ran: $stages"
[ "$stages" = "analysis evaluate-slot2b finetune-slot2b package predict-slot2b pretrain-slot2b tables " ] \
  || fail "expected exactly the slot2b branch, analysis, tables and package"
test -s metrics/slot2b.json && grep -q "slot2b: coarse + mamba" reports/table1.md || fail "slot2b not in Table 1"
echo "integrity checks passed"
