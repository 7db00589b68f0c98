"""Table 2 on a cluster: one submitit job per row that needs its own run, results through the remotes.

A job runs on a compute node in its own clone of the project's git remote, at the commit that was
submitted. There ``dvc exp run --pull`` runs the row's experiment: the stages the row does not
change are the committed pipeline run (Table 1), whose outputs DVC fetches from the DVC remote
instead of re-running them, so no row repeats the features or an untouched system's training.
``dvc exp push`` then sends the experiment back (its git ref to the git remote, its outputs to
the DVC remote), and :func:`collect` pulls the experiments into any clone and writes Table 2 as
``amr ablations table`` does.

Rows whose training stages would be identical (same stages, same params values) train once: the
first such row runs, each other one waits for its experiment, applies it and runs only what
differs (fusion, evaluation). On SLURM the others wait as pending jobs (``afterok``); with the
local executor each polls the git remote for the first row's experiment.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from amr.config.constraints import EXECUTORS
from amr.reporting import ablations
from amr.reporting.ablations import Variant
from amr.util.errors import AmrError

PUSH_FIRST = "run `dvc repro`, commit dvc.lock, then `dvc push` and `git push`"


class ClusterError(AmrError, RuntimeError):
    """A submission or collection that cannot go ahead; the message says what to run."""


def exp_ref(commit: str, row: str) -> str:
    """The git ref under which DVC keeps experiment ``row`` of baseline ``commit``."""
    return f"refs/exps/{commit[:2]}/{commit[2:]}/{row}"


# ---------------------------------------------------------------------------------------------
# On the compute node
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowJob:
    """What a job needs, pickled by submitit: it never reads the submitting checkout."""

    row: str
    overrides: tuple[str, ...]  # the row's -S overrides, then the --set ones
    remote_url: str  # the git remote, cloned by the job and pushed to
    commit: str  # the submitted commit: every experiment's baseline
    clone: str  # the job's own clone
    author: tuple[str, str]  # git user.name and user.email: dvc exp run commits the experiment
    builds_on: str | None = None  # the row whose training this row shares
    builds_on_result: str | None = None  # that row's submitit result file: exists once it ended
    poll_s: float = 30.0


def run_row(job: RowJob) -> str:
    """Clone, run the row's experiment, push it; the experiment's ref. Runs as a submitit job."""
    clone = Path(job.clone)
    if clone.exists():  # a row submitted again starts from a fresh clone
        shutil.rmtree(clone)
    clone.parent.mkdir(parents=True, exist_ok=True)
    _step(["git", "clone", "--quiet", "--no-checkout", job.remote_url, str(clone)])
    _step(["git", "checkout", "--quiet", "--detach", job.commit], clone)
    _step(["git", "config", "user.name", job.author[0]], clone)
    _step(["git", "config", "user.email", job.author[1]], clone)
    dvc = ablations.find_dvc()
    if job.builds_on:
        shared = exp_ref(job.commit, job.builds_on)
        _wait_for_ref(job, shared)
        _step([dvc, "exp", "pull", "origin", shared], clone)
        # its dvc.lock and outputs: the shared training stages are then unchanged, not re-run
        _step([dvc, "exp", "apply", shared], clone)
        # the committed params, so that this row's overrides alone apply (not also that row's)
        _step(["git", "checkout", job.commit, "--", "params.yaml"], clone)
    run = [dvc, "exp", "run", "--pull", "-n", job.row]
    for override in job.overrides:
        run += ["-S", override]
    _step(run, clone)
    ref = exp_ref(job.commit, job.row)
    _step([dvc, "exp", "push", "origin", ref], clone)
    return ref


def _step(cmd: list[str], cwd: Path | None = None) -> None:
    """Run one command with its output in the job's log; a failure fails the job."""
    print("$ " + " ".join(cmd), flush=True)
    # the stages run `python -m stages...`: this Python, whose environment has amr's dependencies
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(cmd, cwd=cwd, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join([Path(cmd[0]).name, *cmd[1:]])} exited with status {done.returncode}")


def _wait_for_ref(job: RowJob, ref: str) -> None:
    print(f"waiting for {job.builds_on}'s experiment ({ref}) on the git remote", flush=True)
    while True:
        # read before looking at the remote: a row that ended has pushed whatever it will push
        ended = job.builds_on_result is not None and Path(job.builds_on_result).exists()
        if ref in remote_exp_refs(job.remote_url):
            return
        if ended:
            raise RuntimeError(f"{job.builds_on} ended without pushing its experiment; see its log")
        time.sleep(job.poll_s)


# ---------------------------------------------------------------------------------------------
# git and DVC, as seen from the submitting checkout
# ---------------------------------------------------------------------------------------------
def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=False)


def _dvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ablations.find_dvc(), *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})


def remote_exp_refs(remote: str) -> set[str]:
    """Every experiment ref on git remote ``remote`` (a name or a URL)."""
    listed = _git("ls-remote", remote, "refs/exps/*")
    if listed.returncode != 0:
        raise ClusterError(f"git ls-remote {remote}: {listed.stderr.strip()}")
    return {line.split("\t")[1] for line in listed.stdout.splitlines() if "\t" in line}


def remote_url(name: str) -> str:
    got = _git("remote", "get-url", name)
    if got.returncode != 0:
        raise ClusterError(f"no git remote {name!r} (cluster.git_remote): add one that every job can "
                           f"clone (`git remote add {name} URL`) and push to it")
    return got.stdout.strip()


def head() -> str:
    got = _git("rev-parse", "HEAD")
    if got.returncode != 0:
        raise ClusterError(f"not a git repository with a commit: {got.stderr.strip()}")
    return got.stdout.strip()


def require_clean_tree() -> None:
    changed = _git("status", "--porcelain", "--untracked-files=no").stdout.splitlines()
    if changed:
        files = ", ".join(line[3:] for line in changed[:5]) + (", ..." if len(changed) > 5 else "")
        raise ClusterError(f"uncommitted changes to tracked files ({files}); the jobs run the "
                           "committed code and params: commit them (`git commit -am MESSAGE`) and "
                           "`git push`, or set them aside (`git stash`)")


def require_on_remote(commit: str, name: str) -> None:
    """``commit`` must be reachable from a branch or tag of the remote, which is what a clone gets."""
    listed = _git("ls-remote", "--heads", "--tags", name)
    if listed.returncode != 0:
        raise ClusterError(f"git ls-remote {name}: {listed.stderr.strip()}")
    tips = {line.split("\t")[0] for line in listed.stdout.splitlines() if "\t" in line}
    if not any(_git("merge-base", "--is-ancestor", commit, tip).returncode == 0 for tip in tips):
        branch = _git("symbolic-ref", "--short", "-q", "HEAD").stdout.strip()
        push = f"git push {name} {branch}" if branch else f"git push {name} HEAD:refs/heads/BRANCH"
        raise ClusterError(f"commit {commit[:7]} is not on git remote {name!r}, so no job can check it "
                           f"out: push it first (`{push}`)")


def git_author() -> tuple[str, str]:
    name, email = (_git("config", key).stdout.strip() for key in ("user.name", "user.email"))
    if not (name and email):
        raise ClusterError("no git identity: the jobs commit their experiments with yours; set it "
                           "(`git config user.name NAME`, `git config user.email EMAIL`)")
    return name, email


def committed_dvc_remote(commit: str) -> str:
    """The default DVC remote of the committed .dvc/config: the one every clone uses."""
    from configobj import ConfigObj  # DVC's own config reader

    shown = _git("show", f"{commit}:.dvc/config")
    config = ConfigObj(shown.stdout.splitlines()) if shown.returncode == 0 else {}
    name = config.get("core", {}).get("remote")
    if not name or not config.get(f'remote "{name}"', {}).get("url"):
        raise ClusterError("no default DVC remote in the committed .dvc/config; the jobs fetch the "
                           "pipeline's outputs from it and push their own: add one that every job "
                           "can reach (`dvc remote add -d NAME URL`), commit .dvc/config, then "
                           "`dvc push` and `git push`")
    return name


def require_outputs_in_remote(commit: str, dvc_remote: str) -> None:
    """Every output of the committed dvc.lock must be in the DVC remote: each row builds on them."""
    if _git("cat-file", "-e", f"{commit}:dvc.lock").returncode != 0:
        raise ClusterError(f"no dvc.lock in commit {commit[:7]}; every row builds on the pipeline's "
                           f"committed run: {PUSH_FIRST}")
    status = _dvc("status", "--cloud", "--remote", dvc_remote, "--json")
    if status.returncode != 0:
        raise ClusterError(f"dvc status --cloud --remote {dvc_remote}: "
                           f"{(status.stderr.strip() or status.stdout.strip()).splitlines()[-1:]}")
    # new: only in the local cache; missing: nowhere; deleted: only in the remote (fine)
    absent = sorted(path for path, state in json.loads(status.stdout or "{}").items()
                    if state in ("new", "missing"))
    if absent:
        raise ClusterError(f"{len(absent)} output(s) of the committed dvc.lock are not in DVC remote "
                           f"{dvc_remote!r} (e.g. {absent[0]}); every row builds on them: {PUSH_FIRST}")


# ---------------------------------------------------------------------------------------------
# Rows and their training
# ---------------------------------------------------------------------------------------------
def select_rows(grid: list[Variant], names: list[str] | None) -> list[Variant]:
    """The rows (in grid order) that need their own run, all of them or those named."""
    own = [v for v in grid if v.same_as is None]
    if not names:
        return own
    known = {v.name: v for v in grid}
    for name in names:
        if name not in known:
            raise ClusterError(f"unknown row {name!r}; rows with their own run: {[v.name for v in own]}")
        if known[name].same_as is not None:
            raise ClusterError(f"row {name!r} reuses {known[name].same_as!r} and has no run of its own")
    return [v for v in own if v.name in names]


def _params_with(params_path: Path, overrides: list[str]) -> dict:
    """The raw params after ``-S overrides``, applied by DVC's own code as ``dvc exp run`` does."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    from amr.config.params import read_params_file

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "params.yaml"
        shutil.copyfile(params_path, copy)
        try:
            apply_overrides(copy, overrides)
        except InvalidArgumentError as exc:
            raise ClusterError(f"overrides {overrides}: {exc.__cause__ or exc}") from None
        return read_params_file(copy)


def _value_at(raw: dict, key: str):
    node = raw
    for name in key.split("."):
        if not isinstance(node, dict) or name not in node:
            return None
        node = node[name]
    return node


def training_stages(raw: dict, root: Path) -> frozenset:
    """(stage, values of the params it reads) of every training stage of params ``raw``."""
    from amr.config.params import Params
    from amr.config.schema import ConfigError
    from amr.pipeline import dag

    try:
        params = Params(raw)
        return frozenset(
            (spec.name, json.dumps({k: _value_at(raw, k) for k in dag.stage_reads(params, spec, root)},
                                   sort_keys=True, default=str))
            for spec in dag.stage_specs(params) if spec.script == "train")
    except ConfigError as exc:
        raise ClusterError(str(exc)) from None


def shared_training(rows: list[Variant], extra: list[str], params_path: Path) -> dict[str, str]:
    """row -> the earlier row it shares its training with, for the rows whose training differs
    from the committed run's (the others build on that run directly)."""
    root = params_path.resolve().parent
    committed = training_stages(_params_with(params_path, []), root)
    first_with: dict[frozenset, str] = {}
    leaders = {}
    for v in rows:
        try:
            changed = training_stages(_params_with(params_path, [*v.overrides, *extra]), root) - committed
        except ClusterError as exc:
            raise ClusterError(f"row {v.name}: {exc}") from None
        if not changed:
            continue
        if changed in first_with:
            leaders[v.name] = first_with[changed]
        else:
            first_with[changed] = v.name
    return leaders


# ---------------------------------------------------------------------------------------------
# Submitting, waiting, collecting
# ---------------------------------------------------------------------------------------------
@dataclass
class Submitted:
    row: str
    job: object  # a submitit Job
    builds_on: str | None


def _load_params(params_path: Path):
    from amr.config.params import Params

    return Params.load(params_path)  # checks cluster: too (amr.config.constraints)


def _submitit(kind: str):
    """The submitit module, once the executor ``kind`` can run here."""
    try:
        import submitit
    except ImportError:
        raise ClusterError("submitit is not installed: pip install 'submitit>=1.5'") from None
    if kind not in EXECUTORS:
        raise ClusterError(f"unknown executor {kind!r}; known: {list(EXECUTORS)}")
    if kind == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise ClusterError("sbatch or srun not found: submit from a SLURM login node, or use "
                           "--executor local")
    return submitit


def _executor(submitit, kind: str, cluster, folder: Path):
    executor = submitit.AutoExecutor(folder=folder, cluster=kind)
    # one log per job, stdout and stderr together, so that its tail shows what failed
    executor.update_parameters(timeout_min=cluster.time_min, stderr_to_stdout=True)
    if kind == "slurm":  # the local executor runs jobs as processes here: no resources to ask for
        executor.update_parameters(nodes=1, tasks_per_node=1, cpus_per_task=cluster.cpus,
                                   mem_gb=cluster.mem_gb)
        if cluster.gpus:  # some clusters refuse a GPU request of 0 on CPU partitions
            executor.update_parameters(gpus_per_node=cluster.gpus)
        if cluster.partition:
            executor.update_parameters(slurm_partition=cluster.partition)
    return executor


def submit(grid: list[Variant] = ablations.GRID, rows: list[str] | None = None,
           executor: str | None = None, extra: list[str] = (), params_path: str | Path = "params.yaml",
           poll_s: float = 30.0) -> list[Submitted]:
    """Submit one job per row that needs its own run (all of ``grid``'s, or ``rows``), from the
    project root; ``extra`` overrides go into every row. Rows already on the git remote for this
    commit are skipped. Prints one line per row."""
    params_path = Path(params_path)
    chosen = select_rows(grid, rows)
    cluster = _load_params(params_path).cluster
    kind = executor or cluster.executor
    submitit = _submitit(kind)
    url = remote_url(cluster.git_remote)
    require_clean_tree()
    commit = head()
    require_on_remote(commit, cluster.git_remote)
    author = git_author()
    require_outputs_in_remote(commit, committed_dvc_remote(commit))
    leaders = shared_training(chosen, list(extra), params_path)
    workdir = Path(cluster.workdir).resolve()
    jobs = _executor(submitit, kind, cluster, workdir / "logs")
    on_remote = remote_exp_refs(url)
    submitted: dict[str, Submitted] = {}
    for v in chosen:
        if exp_ref(commit, v.name) in on_remote:
            print(f"{v.name}: already on {cluster.git_remote} for commit {commit[:7]}, not submitted "
                  f"(to run it again: `dvc exp remove -g {cluster.git_remote} {v.name}`)")
            continue
        leader = submitted.get(leaders.get(v.name))
        if kind == "slurm":  # a row that shares a training starts once that row succeeded
            dependency = {"dependency": f"afterok:{leader.job.job_id}", "kill_on_invalid_dep": "yes"} \
                if leader else {}
            jobs.update_parameters(slurm_additional_parameters=dependency)
        jobs.update_parameters(name=v.name)
        job = jobs.submit(run_row, RowJob(
            v.name, (*v.overrides, *extra), url, commit, str(workdir / v.name), author,
            builds_on=leaders.get(v.name), poll_s=poll_s,
            builds_on_result=str(leader.job.paths.result_pickle) if leader else None))
        submitted[v.name] = Submitted(v.name, job, leaders.get(v.name))
        after = f"  (after {leaders[v.name]}: same training)" if v.name in leaders else ""
        print(f"{v.name}  job {job.job_id}  log {job.paths.stdout}{after}", flush=True)
    return list(submitted.values())


def wait(submitted: list[Submitted], poll_s: float = 30.0, tail: int = 15) -> list[str]:
    """Wait for every job and print each row's outcome, a failure with the end of its log; the
    rows that failed. A row that shares a failed row's training fails too: SLURM does not start
    it, and locally it stops waiting once that row has ended."""
    pending = list(submitted)
    failed = []
    while pending:
        for s in [s for s in pending if s.job.done()]:
            pending.remove(s)
            try:
                print(f"{s.row}: done, pushed {s.job.result()}", flush=True)
            except Exception as exc:  # noqa: BLE001 - a failed job is reported, not raised
                failed.append(s.row)
                print(f"{s.row}: FAILED: {_reason(exc)}\n{_log_tail(Path(s.job.paths.stdout), tail)}",
                      flush=True)
        if pending:
            time.sleep(poll_s)
    return failed


def _reason(exc: Exception) -> str:
    """The exception line of a failed job's traceback (submitit wraps it in its own message)."""
    lines = str(exc).strip().splitlines()
    raised = [line.strip() for line in lines if re.match(r"\s*[\w.]+(Error|Exception): ", line)]
    return raised[-1] if raised else (lines[0] if lines else type(exc).__name__)


def _log_tail(log: Path, count: int) -> str:
    if not log.is_file():
        return f"    (no log at {log})"
    lines = log.read_text(errors="replace").splitlines()
    # what the row's commands printed last, before submitit's own report of the exception
    end = next((i for i, line in enumerate(lines) if line.startswith("submitit ERROR")), len(lines))
    return f"    end of {log}:\n" + "\n".join("    " + line for line in lines[max(0, end - count):end])


def collect(grid: list[Variant] = ablations.GRID, rows: list[str] | None = None,
            params_path: str | Path = "params.yaml", out: str = "reports/table2"):
    """Pull every row's experiment of this commit from the git remote (and its outputs from the
    DVC remote), then write Table 2 as ``amr ablations table`` does; (table, written paths)."""
    params = _load_params(Path(params_path))
    remote = params.cluster.git_remote
    remote_url(remote)  # a missing remote is refused with the command that adds it
    commit = head()
    on_remote = remote_exp_refs(remote)
    for v in select_rows(grid, rows):
        ref = exp_ref(commit, v.name)
        if ref not in on_remote:
            others = sorted(r.split("/")[2] + r.split("/")[3] for r in on_remote if r.endswith(f"/{v.name}"))
            elsewhere = (f"; it has one for commit(s) {', '.join(c[:7] for c in others)}: collect from "
                         "that commit") if others else ""
            print(f"{v.name}: no experiment on {remote} for commit {commit[:7]}, skipped{elsewhere}")
            continue
        pulled = _dvc("exp", "pull", remote, ref)
        if pulled.returncode != 0:
            raise ClusterError(f"dvc exp pull {remote} {v.name}: {pulled.stderr.strip()}")
        print(f"{v.name}: pulled", flush=True)
    return ablations.write_table2(ablations.exp_show_json(), params.analysis, grid, out)
