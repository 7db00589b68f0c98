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
    """The environment of a process that must import ``amr`` from ``root`` (the copy)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMR_")}
    env.update(PYTHONPATH=str(root), DVC_NO_ANALYTICS="1", **extra)
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
