"""A throw-away copy of the project (code, stages, params.yaml, dvc.yaml) to run stages and DVC
in, so that tests can patch code or params without touching the checkout."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("amr", "stages", "params.yaml", "dvc.yaml", ".dvcignore")


def copy_project(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    (dest / ".dvc").mkdir(exist_ok=True)
    shutil.copy2(REPO / ".dvc" / "config", dest / ".dvc" / "config")
    return dest


def project_env(root: Path, **extra: str) -> dict:
    """The environment of a process that must import ``amr`` from ``root`` (the copy); this
    Python first on PATH, as for the stage commands that DVC runs (``python -m stages...``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMR_")}
    path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(PYTHONPATH=str(root), DVC_NO_ANALYTICS="1", PATH=path, **extra)
    return env


def run_stage(root: Path, script: str, *args: str, timeout: int = 600, **env: str):
    """``python -m stages.<script> ARGS`` in ``root``, as dvc.yaml runs it."""
    return subprocess.run([sys.executable, "-m", f"stages.{script}", *args], cwd=root,
                          env=project_env(root, **env), capture_output=True, text=True,
                          timeout=timeout)


def dvc(root: Path, *args: str, timeout: int = 300):
    exe = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"
    return subprocess.run([exe, *args], cwd=root, env=project_env(root), capture_output=True,
                          text=True, timeout=timeout)


def git(root: Path, *args: str):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost"}
    return subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True,
                          check=True)


def apply_overrides(params_path: Path, overrides: list[str]) -> None:
    """Change params.yaml exactly as ``dvc exp run -S KEY=VALUE`` does (DVC's own code)."""
    from dvc.utils.hydra import apply_overrides as dvc_apply

    dvc_apply(params_path, overrides)


# A whole pipeline (every system, fusion, analysis, tables, zip) in about a minute: tiny demo
# data, widths and epochs, as `dvc exp run -S` arguments.
TINY_BUDGET = [
    "++data.demo.sizes.clotho_train_queries=24", "data.demo.sizes.clotho_val_queries=8",
    "data.demo.sizes.castella_train_queries=16", "data.demo.sizes.castella_val_queries=8",
    "++data.demo.sizes.castella_test_queries=8", "++data.demo.sizes.evaluation_queries=6",
    "++data.demo.sizes.castella_min_duration=30", "data.demo.sizes.castella_max_duration=60",
    "++data.demo.sizes.max_queries_per_recording=2",
    "model.hidden_dim=16", "model.heads=2", "model.ffn_dim=32", "model.num_queries=4",
    "mamba.d_state=4", "mamba.expand=1", "dn.copies=2", "cascade.heads=2", "cascade.ffn_dim=16",
    "train.pretrain.epochs=1", "train.finetune.epochs=1", "train.threads=1",
    "analysis.resamples=200",
]


def tiny_project(dest: Path) -> Path:
    """A git repository holding a copy of the project at the tiny budget, committed."""
    root = copy_project(dest)
    (root / ".gitignore").write_text("__pycache__/\n")
    apply_overrides(root / "params.yaml", TINY_BUDGET)
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@localhost")  # dvc exp commits need an identity
    git(root, "config", "user.name", "t")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "tiny project")
    return root
