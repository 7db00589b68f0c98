#!/usr/bin/env bash
# `data.source: extract` from raw audio: synthesised recordings (tones and noise, at 8, 22.05 and
# 44.1 kHz, mono and stereo, wav and flac; the pre-training audio in a Clotho-Moment-style
# WebDataset shard) for real CASTELLA annotations and evaluation queries from tests/fixtures.
# A clone of this checkout with params.yaml changed (test backend, paths), `amr pipeline sync`
# and `dvc repro` must reach a valid zip whose meta files name the extractor. Epochs are cut.
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1
REPO=$PWD
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
DATA=$WORK/raw

.venv/bin/python - "$DATA" <<'PY'
import io, json, sys, tarfile
from pathlib import Path
import numpy as np
import soundfile as sf

out = Path(sys.argv[1])
for d in ("ann", "castella", "evaluation", "clotho/train", "clotho/valid"):
    (out / d).mkdir(parents=True)
rows = [json.loads(l) for l in open("tests/fixtures/castella_val_release.jsonl")]
vids = sorted({r["vid"] for r in rows}, key=lambda v: (min(r["duration"] for r in rows if r["vid"] == v), v))[:35]
split_of = {v: ["pre_train", "pre_train", "pre_val", "ft_train", "ft_train", "ft_val", "ft_test"][i % 7]
            for i, v in enumerate(vids)}
# Clotho-Moment vids are <city>_<start>_<end> (the bg.path's folder and stem): renamed so
clotho_vid = {v: f"Town{i}_0.0_60.0" for i, v in enumerate(vids) if split_of[v].startswith("pre")}
for r in rows:
    r["vid"] = clotho_vid.get(r["vid"], r["vid"])
split_of = {clotho_vid.get(v, v): s for v, s in split_of.items()}
for name in ("pre_train", "pre_val", "ft_train", "ft_val", "ft_test"):
    with open(out / "ann" / f"{name}.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows if split_of.get(r["vid"]) == name)
queries = [json.loads(l) for l in open("tests/fixtures/eval_list.jsonl")]
queries = sorted(queries, key=lambda r: r["duration"])[:20]
with open(out / "ann" / "eval.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in queries)

rng = np.random.default_rng(0)
def audio(seconds, rate, channels):
    t = np.arange(int(seconds * rate)) / rate
    y = 0.2 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) * (t % 7 < 3) + 0.02 * rng.standard_normal(t.shape)
    return np.stack([y] * channels, 1).astype(np.float32) if channels > 1 else y.astype(np.float32)
durations = {r["vid"]: r["duration"] for r in rows + queries}
formats = [(8000, 1, "wav"), (22050, 2, "flac"), (44100, 1, "wav")]
shards = {"pre_train": tarfile.open(out / "clotho/train/shard-000000.tar", "w"),
          "pre_val": tarfile.open(out / "clotho/valid/shard-000000.tar", "w")}
for i, vid in enumerate(sorted(durations)):
    rate, channels, ext = formats[i % 3]
    y = audio(durations[vid] + 0.4, rate, channels)
    if split_of.get(vid, "").startswith("pre"):  # Clotho-Moment style: vid from bg.path
        buffer = io.BytesIO(); sf.write(buffer, y, rate, format="WAV"); wav = buffer.getvalue()
        city, _, stem = vid.partition("_")
        meta = json.dumps({"bg": {"path": f"bg/{city}/{stem}.wav"}}).encode()
        for name, data in ((f"{i:06d}.wav", wav), (f"{i:06d}.json", meta)):
            info = tarfile.TarInfo(name); info.size = len(data)
            shards[split_of[vid]].addfile(info, io.BytesIO(data))
    else:
        folder = "evaluation" if vid.startswith("dcase2026") else "castella"
        sf.write(out / folder / f"{vid}.{ext}", y, rate)
for tar in shards.values():
    tar.close()
PY

git clone -q "$REPO" "$WORK/repo"
cd "$WORK/repo"
"$REPO/.venv/bin/python" - "$DATA" <<'PY'
import sys
import yaml
data = sys.argv[1]
params = yaml.safe_load(open("params.yaml"))
params["data"]["source"] = "extract"
extract = params["data"]["extract"]
extract["backend"] = "test"
extract["pretrain"] = {"train": f"{data}/ann/pre_train.jsonl", "val": f"{data}/ann/pre_val.jsonl",
                       "audio": [f"{data}/clotho/train", f"{data}/clotho/valid"]}
extract["finetune"] = {"train": f"{data}/ann/ft_train.jsonl", "val": f"{data}/ann/ft_val.jsonl",
                       "test": f"{data}/ann/ft_test.jsonl", "audio": [f"{data}/castella"]}
extract["evaluation"] = {"queries": f"{data}/ann/eval.jsonl", "audio": [f"{data}/evaluation"]}
extract["device"] = "cpu"
params["train"]["pretrain"]["epochs"] = 2
params["train"]["finetune"]["epochs"] = 1
yaml.safe_dump(params, open("params.yaml", "w"), sort_keys=False)
PY
"$REPO/.venv/bin/python" -m amr pipeline sync
PATH="$REPO/.venv/bin:$PATH" dvc repro
PATH="$REPO/.venv/bin:$PATH" dvc status package | grep -q "up to date"  # data.dvc is not pulled here
ls data/extracted/{pretrain,finetune,evaluation}.report.json
grep -q '"backend": "test"' data/features/extractor.json
test -s reports/table1.md
"$REPO/.venv/bin/amr" validate-submission submission/build/*_task6.zip --eval-list "$DATA/ann/eval.jsonl"
unzip -p submission/build/*_task6.zip '*_1.meta.yaml' | grep -q "audio features (frozen): test"
echo "extract: raw audio to a valid zip"
