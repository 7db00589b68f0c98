"""Table 2 over a cluster, with submitit's local executor, a bare git remote and a folder as the DVC
remote: each job clones the remote, runs its row with DVC and pushes it; a row that shares a
training waits for it; a fresh clone collects Table 2. Real git and DVC throughout."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from projectkit import dvc, git, project_env, tiny_project

from amr.pipeline import cluster
from amr.reporting import ablations

SLOT1_WITHOUT_RERANK = ["systems.slot1.rerank.enabled=false"]
# a training row of the real grid's kind (G1), a row with the same training and an inference-only
# knob of its own (G5's τs), and a row that reuses Table 1
GRID = [
    ablations.Variant("norerank", "g1", "slot 1 without rerank", "slot1", SLOT1_WITHOUT_RERANK),
    ablations.Variant("norerank-tau03", "g2", "slot 4, τs=0.3 (slot 1 without rerank)", "slot4",
                      [*SLOT1_WITHOUT_RERANK, "saliency_proposals.threshold=0.3"]),
    ablations.Variant("slot1", "g1", "slot 1", "slot1", bold=True, same_as="slot1"),
]


def _bare_remote(root: Path, path: Path) -> None:
    """``origin``: a bare repository whose default branch is ``root``'s (so that clones check it out)."""
    branch = git(root, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
    subprocess.run(["git", "init", "-q", "--bare", f"--initial-branch={branch}", str(path)], check=True)
    git(root, "remote", "add", "origin", str(path))


def _dvc_remote(root: Path, path: Path) -> None:
    """A folder as the default DVC remote, committed in .dvc/config as every clone needs it."""
    proc = dvc(root, "remote", "add", "-d", "store", str(path))
    assert proc.returncode == 0, proc.stderr
    git(root, "add", ".dvc/config")
    git(root, "commit", "-qm", "DVC remote")


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """A tiny project after `dvc repro`, dvc.lock committed, its outputs in the DVC remote and the
    commit on the git remote: what a user has before submitting Table 2."""
    base = tmp_path_factory.mktemp("cluster")
    root = tiny_project(base / "project")
    proc = dvc(root, "repro", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    git(root, "add", "-A")
    git(root, "commit", "-qm", "pipeline results")
    _bare_remote(root, base / "remote.git")
    _dvc_remote(root, base / "dvc-store")
    proc = dvc(root, "push", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    git(root, "push", "-q", "origin", "HEAD")
    return root


def _submit_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amr", "ablations", "submit", "--executor", "local", *args],
                          cwd=root, env=project_env(root), capture_output=True, text=True, timeout=300,
                          check=False)


def _refused(proc: subprocess.CompletedProcess, *fix: str) -> None:
    """One `error:` line naming the fix, a non-zero exit, no traceback."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    for words in fix:
        assert words in proc.stderr, proc.stderr


def test_submit_refuses_until_commit_and_outputs_are_pushed(tmp_path):
    root = tiny_project(tmp_path / "project")
    row = ["--rows", "t2-dn-sigma003"]
    _refused(_submit_cli(root, "--rows", "t2-nosuch"), "unknown row 't2-nosuch'", "t2-dn-sigma003")
    _refused(_submit_cli(root, "--rows", "t2-both"), "reuses 'slot4'")
    _refused(_submit_cli(root, *row), "no git remote 'origin'", "git remote add origin")
    _bare_remote(root, tmp_path / "remote.git")

    params = root / "params.yaml"
    params.write_text(params.read_text() + "\n")
    _refused(_submit_cli(root, *row), "uncommitted changes", "params.yaml", "git commit")
    git(root, "checkout", "params.yaml")
    _refused(_submit_cli(root, *row), "not on git remote 'origin'", "git push origin")
    git(root, "push", "-q", "origin", "HEAD")
    _refused(_submit_cli(root, *row), "no default DVC remote", "dvc remote add -d")

    # the DVC remote only in the local, uncommitted config: a clone would not have it
    proc = dvc(root, "remote", "add", "--local", "-d", "mine", str(tmp_path / "dvc-store"))
    assert proc.returncode == 0, proc.stderr
    _refused(_submit_cli(root, *row), "no default DVC remote", "commit .dvc/config")
    _dvc_remote(root, tmp_path / "dvc-store")
    git(root, "push", "-q", "origin", "HEAD")
    _refused(_submit_cli(root, *row), "no dvc.lock", "dvc repro", "dvc push")

    # a pipeline run committed (its first stage: cheap) but its outputs not pushed
    proc = dvc(root, "repro", "features")
    assert proc.returncode == 0, proc.stderr[-3000:]
    git(root, "add", "-A")
    git(root, "commit", "-qm", "features")
    git(root, "push", "-q", "origin", "HEAD")
    _refused(_submit_cli(root, *row), "not in DVC remote 'store'", "dvc push")


def test_submit_without_submitit_names_the_install(monkeypatch, capsys):
    from amr.cli import main

    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    assert main(["ablations", "submit", "--executor", "local", "--rows", "t2-dn-sigma003",
                 "--params", str(params)]) == 2
    assert capsys.readouterr().err == "error: submitit is not installed: pip install 'submitit>=1.5'\n"


def test_only_rows_with_the_same_training_share_it():
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    assert cluster.shared_training(GRID[:2], [], params) == {"norerank-tau03": "norerank"}
    # rows whose training is the committed run's build on it directly, whatever they share
    only_inference = [ablations.Variant(f"tau{t}", "g", "τs", "slot4",
                                        [f"saliency_proposals.threshold=0.{t}"]) for t in (3, 7)]
    assert cluster.shared_training(only_inference, [], params) == {}
    # a budget override for every row retrains every system: then they share that training
    assert cluster.shared_training(only_inference, ["train.finetune.epochs=1"], params) == {"tau7": "tau3"}
    # today's grid: no two rows train the same thing
    assert cluster.shared_training(cluster.select_rows(ablations.GRID, None), [], params) == {}


def test_rows_run_as_jobs_push_their_experiments_and_a_fresh_clone_collects_table2(
        pushed, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(pushed)
    for key, value in project_env(pushed).items():
        monkeypatch.setenv(key, value)
    submitted = cluster.submit(GRID, executor="local", poll_s=2)
    printed = capsys.readouterr().out
    assert [(s.row, s.builds_on) for s in submitted] == [("norerank", None), ("norerank-tau03", "norerank")]
    assert "(after norerank: same training)" in printed
    failed = cluster.wait(submitted, poll_s=2)
    printed = capsys.readouterr().out
    assert failed == [], printed

    # both experiments are on the git remote, under the submitted commit
    commit = git(pushed, "rev-parse", "HEAD").stdout.strip()
    refs = git(pushed, "ls-remote", "origin", "refs/exps/*").stdout
    for row in ("norerank", "norerank-tau03"):
        assert cluster.exp_ref(commit, row) in refs, refs
    # the second row waited for the first's training instead of repeating it
    first, second = (Path(s.job.paths.stdout).read_text() for s in submitted)
    assert "Running stage 'pretrain-slot1'" in first and "Running stage 'finetune-slot1'" in first
    assert "waiting for norerank's experiment" in second
    assert "Running stage 'pretrain-slot1'" not in second and "Running stage 'finetune-slot1'" not in second
    assert "Running stage 'fuse-slot4'" in second
    # the features and the untouched systems came from the DVC remote, in both
    assert "Running stage 'features'" not in first + second
    assert "Running stage 'pretrain-slot3'" not in first + second

    # submitted again: the rows on the remote are not run twice
    assert cluster.submit(GRID, executor="local") == []
    assert capsys.readouterr().out.count("already on origin") == 2

    # Table 2 in a fresh clone of the git remote, with a row that was never submitted
    fresh = tmp_path / "fresh"
    remote = git(pushed, "remote", "get-url", "origin").stdout.strip()
    subprocess.run(["git", "clone", "-q", remote, str(fresh)], check=True)
    monkeypatch.chdir(fresh)
    monkeypatch.setenv("PYTHONPATH", str(fresh))
    never = ablations.Variant("never", "g3", "κ=0.10", "slot3", ["cascade.kappa=0.1"])
    table, paths = cluster.collect([*GRID, never])
    printed = capsys.readouterr().out
    assert "norerank: pulled" in printed and "norerank-tau03: pulled" in printed
    assert f"never: no experiment on origin for commit {commit[:7]}, skipped" in printed
    rows = {r.label: r for r in table.rows}
    for row in GRID[:2]:
        assert rows[row.label].run == row.name
        assert set(rows[row.label].metrics) >= {"R1@0.5", "R1@0.7", "mAP"}, row.name
    assert rows["slot 1"].run == "reuses Table 1: slot1" and rows["slot 1"].metrics["R1@0.7"] is not None
    # the own run's R1@0.7 against its group's selected row: per-query results from its commit
    assert rows["slot 1 without rerank"].marks["R1@0.7"].startswith(" (Δ ")
    assert rows["κ=0.10"].run == "never (not run)" and rows["κ=0.10"].metrics == {}
    assert [p.name for p in paths] == ["table2.md", "table2.csv", "table2.tex"]
    assert "slot 1 without rerank" in (fresh / "reports" / "table2.md").read_text()


def test_a_failed_row_is_reported_with_its_log_and_the_row_sharing_its_training_stops(
        pushed, monkeypatch, capsys):
    monkeypatch.chdir(pushed)
    for key, value in project_env(pushed).items():
        monkeypatch.setenv(key, value)
    if torch.cuda.is_available():
        pytest.skip("the row breaks by asking for a GPU that is not there")
    broken = ["train.device=cuda"]  # loads, but no training stage can run without a GPU
    grid = [ablations.Variant("broken", "g", "broken", "slot1", broken),
            ablations.Variant("broken-tau", "g", "broken, τs", "slot4",
                              [*broken, "saliency_proposals.threshold=0.3"])]
    submitted = cluster.submit(grid, executor="local", poll_s=2)
    assert cluster.wait(submitted, poll_s=2) == ["broken", "broken-tau"]
    printed = capsys.readouterr().out
    assert "broken: FAILED: RuntimeError: dvc exp run --pull -n broken -S train.device=cuda exited" in printed
    assert "no CUDA device is visible" in printed  # from the end of its log
    assert "broken-tau: FAILED: RuntimeError: broken ended without pushing its experiment" in printed
    commit = git(pushed, "rev-parse", "HEAD").stdout.strip()
    assert cluster.exp_ref(commit, "broken") not in git(pushed, "ls-remote", "origin").stdout

def test_slurm_jobs_ask_for_the_cluster_resources_and_wait_for_a_shared_training(
        pushed, tmp_path, monkeypatch):
    """What reaches sbatch, through a stand-in that records each batch script (no SLURM here)."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    sbatch = tmp_path / "bin" / "sbatch"
    sbatch.parent.mkdir()
    sbatch.write_text(f'#!/bin/sh\nn=$(ls {scripts} | wc -l)\ncp "$1" {scripts}/$n.sh\n'
                      'echo "Submitted batch job $((700 + n))"\n')
    sbatch.chmod(0o755)
    (sbatch.parent / "srun").symlink_to(sbatch)  # submitit looks for it; the batch script calls it
    monkeypatch.chdir(pushed)
    for key, value in project_env(pushed).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{sbatch.parent}:{project_env(pushed)['PATH']}")
    kappa = ["cascade.kappa=0.1"]
    grid = [ablations.Variant("slurm-kappa", "g", "κ", "slot3", kappa),
            ablations.Variant("slurm-kappa-tau", "g", "κ, τs", "slot4",
                              [*kappa, "saliency_proposals.threshold=0.3"])]
    submitted = cluster.submit(grid, executor="slurm")
    assert [s.job.job_id for s in submitted] == ["700", "701"]
    first, second = ((scripts / f"{n}.sh").read_text() for n in range(2))
    # the cluster: section's defaults, as params.yaml sets them
    for flag in ("--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB", "--time=1440",
                 "--job-name=slurm-kappa"):
        assert f"#SBATCH {flag}\n" in first, first
    assert "--partition" not in first and "--dependency" not in first
    assert "#SBATCH --dependency=afterok:700\n" in second and "#SBATCH --kill-on-invalid-dep=yes\n" in second
