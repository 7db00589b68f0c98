"""Wall time of every stage of the demo `dvc repro`, as a user sees it.

Runs ``dvc repro`` (``--force``: every stage, even when its outputs are cached) in a throw-away
copy of the committed project and times the gap between DVC's "Running stage" lines: a stage's
figure is its process start-up, its work and DVC's bookkeeping after it (hashing its outputs,
writing dvc.lock). Training stages also show their epochs' share.

    python bench/repro_stages.py [--keep DIR]

Prints a table (stage, seconds, share) and ends with ONE JSON line:
{"total_s": ..., "stages": {"features": s, ...}, "training_s": ..., "other_s": ...}
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNING = re.compile(r"Running stage '([^']+)'")
EPOCH = re.compile(r"^(pretrain|finetune) epoch \d+/\d+ .*\s([0-9.]+)s$")


def copy_project(dest: Path) -> Path:
    """The committed project (what a fresh clone holds), without outputs or the virtualenv."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    return dest


def timed_repro(root: Path) -> tuple[dict[str, float], dict[str, float], float]:
    """(stage -> wall seconds, stage -> seconds of its epochs, total seconds)."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    dvc = shutil.which("dvc", path=env["PATH"])
    start = time.perf_counter()
    proc = subprocess.Popen([dvc, "repro", "--force"], cwd=root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    walls: dict[str, float] = {}
    epochs: dict[str, float] = {}
    current, since = None, start
    for line in proc.stdout:
        now = time.perf_counter()
        match = RUNNING.search(line)
        if match:
            if current is not None:
                walls[current] = now - since
            current, since = match.group(1), now
            continue
        epoch = EPOCH.match(line.strip())
        if epoch and current is not None:
            epochs[current] = epochs.get(current, 0.0) + float(epoch.group(2))
    proc.wait()
    end = time.perf_counter()
    if current is not None:
        walls[current] = end - since
    if proc.returncode != 0:
        raise SystemExit(f"dvc repro failed (exit {proc.returncode}) in {root}")
    return walls, epochs, end - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = copy_project(args.keep or Path(tmp) / "project")
        walls, epochs, total = timed_repro(root)
    training = sum(s for name, s in walls.items() if name.startswith(("pretrain-", "finetune-")))
    print(f"{'stage':<22}{'seconds':>9}{'share':>8}{'of it epochs':>14}")
    for name, seconds in walls.items():
        print(f"{name:<22}{seconds:9.1f}{100 * seconds / total:7.1f}%"
              + (f"{epochs[name]:14.1f}" if name in epochs else ""))
    print(f"{'total':<22}{total:9.1f}    (training stages {training:.1f} s, the rest {total - training:.1f} s)")
    print(json.dumps({"total_s": round(total, 1), "stages": {k: round(v, 1) for k, v in walls.items()},
                      "training_s": round(training, 1), "other_s": round(total - training, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
