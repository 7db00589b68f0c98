"""Stage `predict-<system>`: a fine-tuned model on development-testing and on the blind
evaluation list."""
import argparse
from dataclasses import dataclass

from amr.config.schema import InferenceConfig
from amr.pipeline.stage import stage_main


@dataclass(frozen=True)
class Job:
    system: str
    seed: int
    inference: InferenceConfig
    batch_size: int
    device: str
    threads: int


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--system", required=True)
    ap.add_argument("--seed", type=int, required=True)
    return ap


def configure(params, args) -> Job:
    # the model's own configuration comes from its checkpoint, not from params.yaml
    return Job(args.system, args.seed, params.inference, params.value("train.eval_batch_size"),
               params.value("train.device"), params.value("train.threads"))


def run(job: Job) -> None:
    import json

    from amr.config.paths import PREDICT_SPLITS, ground_truth, packed, predictions, run_dir
    from amr.engine.predict import predict_split

    checkpoint = run_dir("finetune", job.system, job.seed) / "best.pt"
    for split, packed_name in PREDICT_SPLITS.items():
        gt = ground_truth(packed_name) if split == "test" else None
        summary = predict_split(checkpoint, packed(packed_name), predictions(job.system, split, job.seed),
                                batch_size=job.batch_size, device=job.device,
                                inference_cfg=job.inference, gt_path=gt, threads=job.threads)
        print(f"{job.system} seed {job.seed} {split}: {json.dumps(summary)}", flush=True)


if __name__ == "__main__":
    stage_main(parser(), configure, run)
