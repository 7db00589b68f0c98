#!/usr/bin/env bash
# GPU readiness in one run (under 8 minutes on one modern GPU):
#   0. the `cuda` extra (mamba-ssm) is installed if it does not import yet;
#   1. the parity test of our selective scan against mamba-ssm's CUDA kernel (float32, forward
#      and every gradient; tolerance in tests/test_mamba.py) and the broken-install fallback;
#   2. a paper-preset training step (batch 32, 300 frames) per system, with mamba-ssm's kernel
#      and with ours, with peak GPU memory (bench/gpu_check.py);
#   3. the demo pipeline, 2 epochs per training stage, on the GPU, end to end (`dvc repro` in a
#      scratch copy of the project: the working copy is not touched).
# Prints what it does, then ONE JSON line with every figure.
#
#   bash bench/gpu_check.sh                 # .venv from `make install`; all four parts
#   bash bench/gpu_check.sh parity steps    # only the parts named (install parity steps pipeline)
#   PYTHON=/path/to/python bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || { make install; PY=$ROOT/.venv/bin/python; }
LOG=$(mktemp -d)
started=$(date +%s)
PARTS=${*:-install parity steps pipeline}
part() { [[ " $PARTS " == *" $1 "* ]]; }
parity_rc=skipped parity_summary="" pipeline_rc=skipped pipeline_s=0 work=""
echo '{}' > "$LOG/steps.txt"

if part install; then
    echo "== 0. mamba-ssm (the cuda extra)"
    if ! "$PY" -c "import mamba_ssm.ops.selective_scan_interface" 2>/dev/null; then
        # --no-build-isolation: build against the torch installed here, not a fresh one
        "$PY" -m pip install --no-build-isolation "mamba-ssm>=2.2" \
            || echo "mamba-ssm could not be installed: timing our scan only"
    fi
fi
mamba_version=$("$PY" -c "from importlib.metadata import version; print(version('mamba-ssm'))" 2>/dev/null || echo none)
echo "mamba-ssm: $mamba_version"

if part parity; then
    echo "== 1. scan parity and the broken-install fallback"
    parity_rc=0
    "$PY" -m pytest -q -p no:cacheprovider tests/test_mamba.py \
        -k "cuda_kernel or broken_mamba_ssm" -rs | tee "$LOG/parity.txt" || parity_rc=$?
    parity_summary=$(tail -n 1 "$LOG/parity.txt")
fi

if part steps; then
    echo "== 2. training step per system (paper preset)"
    "$PY" bench/gpu_check.py | tee "$LOG/steps.txt"
fi

if part pipeline; then
    echo "== 3. demo pipeline on the GPU, 2 epochs per stage"
    work=$(mktemp -d)
    tar --exclude=./.venv --exclude=./.git --exclude=./runs --exclude=./data/features --exclude=./data/demo \
        --exclude=./metrics --exclude=./predictions --exclude=./reports --exclude=./submission/build --exclude=./.dvc/cache --exclude=./.dvc/tmp \
        -cf - . | tar -C "$work" -xf -
    mkdir -p "$work/.bin"  # dvc.yaml runs `python -m stages.X`: that python is $PY
    printf '#!/bin/sh\nexec "%s" "$@"\n' "$PY" > "$work/.bin/python" && chmod +x "$work/.bin/python"
    printf 'train:\n  device: cuda\n  pretrain: {epochs: 2}\n  finetune: {epochs: 2}\n' > "$LOG/gpu_demo.yaml"
    pipeline_start=$(date +%s)
    pipeline_rc=0
    (
        cd "$work"
        export PATH="$work/.bin:$PATH"
        python -m amr profile "$LOG/gpu_demo.yaml" >/dev/null
        python -m dvc config --local core.no_scm true  # a scratch copy without git
        python -m dvc repro --quiet
        python -m amr validate-submission submission/build/*_task6.zip --eval-list data/features/evaluation.jsonl
    ) > "$LOG/pipeline.txt" 2>&1 || pipeline_rc=$?
    tail -n 20 "$LOG/pipeline.txt"
    pipeline_s=$(( $(date +%s) - pipeline_start ))
fi

"$PY" - "$LOG" "$work" "$parity_rc" "$parity_summary" "$pipeline_rc" "$pipeline_s" "$mamba_version" "$started" <<'EOF'
import json, sys, time
from pathlib import Path

log, work, parity_rc, parity_summary, pipeline_rc, pipeline_s, mamba_version, started = sys.argv[1:]
import torch

steps = json.loads(Path(log, "steps.txt").read_text().strip().splitlines()[-1])
result = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
          "torch": torch.__version__, "cuda": torch.version.cuda, "mamba_ssm": mamba_version}
if parity_rc != "skipped":
    result["parity_test"] = {"passed": parity_rc == "0", "pytest": parity_summary}
if steps:
    result |= {"scan_parity": steps["scan_parity"], "train_step": steps["train_step"]}
if pipeline_rc != "skipped":
    work = Path(work)
    table1 = {}
    for path in sorted((work / "metrics").glob("*.json")):
        if path.name.count(".") == 1:  # metrics/<system>.json (not *.info.json)
            table1[path.stem] = json.loads(path.read_text()).get("R1@0.7")
    scans = {}
    for info in sorted((work / "runs" / "finetune").glob("*/seed-*/system_info.json")):
        scans[f"{info.parent.parent.name}/{info.parent.name}"] = json.loads(info.read_text()).get("selective_scan")
    result["demo_pipeline"] = {"passed": pipeline_rc == "0", "seconds": int(pipeline_s),
                               "R1@0.7": table1, "selective_scan": scans}
result["total_s"] = int(time.time() - int(started))
print(json.dumps(result))
EOF
[[ "$parity_rc" =~ ^(0|skipped)$ ]] && [[ "$pipeline_rc" =~ ^(0|skipped)$ ]]
