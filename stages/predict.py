"""Stage `predict`: a fine-tuned model on development-testing and on the blind evaluation list."""
import argparse
import json

from amr.params import Params
from amr.pipeline import PREDICT_SPLITS, ground_truth, packed, predictions, run_dir
from amr.predict import predict_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--system", required=True)
    ap.add_argument("--seed", type=int, required=True)
    args = ap.parse_args()

    params = Params.load()
    checkpoint = run_dir("finetune", args.system, args.seed) / "best.pt"
    for split, packed_name in PREDICT_SPLITS.items():
        gt = ground_truth(packed_name) if split == "test" else None
        summary = predict_split(checkpoint, packed(packed_name), predictions(args.system, split, args.seed),
                                batch_size=params.train.eval_batch_size, device=params.train.device,
                                inference_cfg=params.inference, gt_path=gt, threads=params.train.threads)
        print(f"{args.system} seed {args.seed} {split}: {json.dumps(summary)}", flush=True)


if __name__ == "__main__":
    main()
