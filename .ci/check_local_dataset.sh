#!/usr/bin/env bash
# `data.source: local` on a second dataset: real CASTELLA annotations and evaluation queries
# (tests/fixtures) with synthesised features, split by recording into the official layout.
# A clone of this checkout, with only params.yaml changed, must run `dvc repro` to a valid zip.
# Epochs are cut to keep CI short; what is checked is that the pipeline runs unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1
REPO=$PWD
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
DATA=$WORK/dataset

.venv/bin/python - "$DATA" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1]); (out / "ann").mkdir(parents=True)
rows = [json.loads(l) for l in open("tests/fixtures/castella_val_release.jsonl")]
vids = sorted({r["vid"] for r in rows})
split_of = {}
for i, vid in enumerate(vids):  # by recording, so that no recording is in two splits
    split_of[vid] = ["pre_train", "pre_train", "pre_val", "ft_train", "ft_train", "ft_val", "ft_test"][i % 7]
for name in ("pre_train", "pre_val", "ft_train", "ft_val", "ft_test"):
    with open(out / "ann" / f"{name}.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows if split_of[r["vid"]] == name)
queries = [json.loads(l) for l in open("tests/fixtures/eval_list.jsonl")][:40]
with open(out / "ann" / "eval.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in queries)
PY
for split in pre_train pre_val; do
  .venv/bin/amr demo-data --annotations "$DATA/ann/$split.jsonl" --audio-dir "$DATA/pre_audio" \
    --text-dir "$DATA/pre_text" --seed 1 "$WORK/unused" | tail -n 1
done
for split in ft_train ft_val ft_test; do
  .venv/bin/amr demo-data --annotations "$DATA/ann/$split.jsonl" --audio-dir "$DATA/ft_audio" \
    --text-dir "$DATA/ft_text" --seed 1 "$WORK/unused" | tail -n 1
done
.venv/bin/amr demo-data --annotations "$DATA/ann/eval.jsonl" --audio-dir "$DATA/eval_audio" \
  --text-dir "$DATA/eval_text" --seed 1 "$WORK/unused" | tail -n 1

git clone -q "$REPO" "$WORK/repo"
cd "$WORK/repo"
"$REPO/.venv/bin/python" - "$DATA" <<'PY'
import sys
import yaml
data = sys.argv[1]
params = yaml.safe_load(open("params.yaml"))
params["data"]["source"] = "local"
params["data"]["local"] = {
    "pretrain": {"train": f"{data}/ann/pre_train.jsonl", "val": f"{data}/ann/pre_val.jsonl",
                 "audio_dir": f"{data}/pre_audio", "text_dir": f"{data}/pre_text"},
    "finetune": {"train": f"{data}/ann/ft_train.jsonl", "val": f"{data}/ann/ft_val.jsonl",
                 "test": f"{data}/ann/ft_test.jsonl",
                 "audio_dir": f"{data}/ft_audio", "text_dir": f"{data}/ft_text"},
    "evaluation": {"queries": f"{data}/ann/eval.jsonl", "audio_dir": f"{data}/eval_audio",
                   "text_dir": f"{data}/eval_text"},
}
params["train"]["pretrain"]["epochs"] = 2
params["train"]["finetune"]["epochs"] = 1
yaml.safe_dump(params, open("params.yaml", "w"), sort_keys=False)
PY
PATH="$REPO/.venv/bin:$PATH" dvc repro
ls metrics/{baseline,slot1,slot2,slot3,slot4}.json
test -s reports/table1.md
"$REPO/.venv/bin/amr" validate-submission submission/build/*_task6.zip --eval-list "$DATA/ann/eval.jsonl"
echo "local dataset: pipeline ran unchanged"
