"""Stage `evaluate-<system>`: official metrics of one system on development-testing
(+ breakdowns, per-seed spread and the system's parameter counts)."""
import argparse

from amr.pipeline.stage import stage_main
from amr.reporting.systems import SystemRuns, system_runs


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--system", required=True)
    return ap


def configure(params, args) -> SystemRuns:
    return system_runs(params, args.system)


def run(job: SystemRuns) -> None:
    from amr.reporting.systems import evaluate_system

    print(f"{job.name}: {evaluate_system(job)}", flush=True)


if __name__ == "__main__":
    stage_main(parser(), configure, run)
