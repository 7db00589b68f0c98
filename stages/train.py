"""Stage `pretrain-<system>` / `finetune-<system>`: train one system at one seed (report §2.4)."""
import argparse
from dataclasses import dataclass

from amr.config.schema import ScheduleConfig, SystemConfig, TrainConfig
from amr.pipeline.stage import stage_main


@dataclass(frozen=True)
class Job:
    system: SystemConfig
    train: TrainConfig
    schedule: ScheduleConfig
    stage: str  # pretrain | finetune
    seed: int


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--system", required=True)
    ap.add_argument("--stage", required=True, choices=["pretrain", "finetune"])
    ap.add_argument("--seed", type=int, help="fine-tuning seed (pre-training uses train.seed)")
    return ap


def configure(params, args) -> Job:
    train = params.train
    seed = train.seed if args.stage == "pretrain" or args.seed is None else args.seed
    return Job(params.system(args.system), train, params.schedule(args.stage), args.stage, seed)


def run(job: Job) -> None:
    from amr.config.paths import packed, run_dir
    from amr.engine.train import train_stage

    name = job.system.name
    if job.stage == "pretrain":
        out, init = run_dir("pretrain", name), None
    else:
        out, init = run_dir("finetune", name, job.seed), run_dir("pretrain", name) / "best.pt"
    train_stage(
        job.system, job.train, job.schedule, job.stage,
        packed(f"{job.stage}_train"), packed(f"{job.stage}_val"), out,
        init_from=init, seed=job.seed, in_memory=True, restart_on_mismatch=True,
    )


if __name__ == "__main__":
    stage_main(parser(), configure, run)
