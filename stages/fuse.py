"""Stage `fuse-<system>`: slot 4 = score-level ensemble of the base system's seeds + saliency
proposals (report §3.6)."""
import argparse
from dataclasses import dataclass

from amr.config.schema import SaliencyProposalsConfig
from amr.pipeline.stage import stage_main


@dataclass(frozen=True)
class Job:
    system: str
    base: str
    seeds: tuple[int, ...]
    proposals: SaliencyProposalsConfig | None  # None: decoder windows only
    keep: int
    clip_length: float


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--system", required=True)
    return ap


def configure(params, args) -> Job:
    fusion = params.fusion(args.system)
    # read (so declared) even when switched off: an experiment that switches the proposals
    # off or on keeps the declared params of dvc.yaml
    proposals = params.saliency_proposals
    return Job(args.system, fusion.base, tuple(params.fusion_members(args.system)),
               proposals if fusion.saliency_proposals else None,
               params.value("inference.max_windows"), params.value("data.clip_length"))


def run(job: Job) -> None:
    from amr.config.paths import PREDICT_SPLITS, predictions
    from amr.engine.fuse import fuse_files

    for split in PREDICT_SPLITS:
        members = [predictions(job.base, split, seed) for seed in job.seeds]
        fused = fuse_files(members, predictions(job.system, split), job.proposals,
                           keep=job.keep, clip_length=job.clip_length)
        print(f"{job.system} {split}: fused {len(members)} member(s), {len(fused)} queries", flush=True)


if __name__ == "__main__":
    stage_main(parser(), configure, run)
