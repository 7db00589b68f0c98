"""Stage `fuse`: slot 4 = score-level ensemble of the base system's seeds + saliency proposals."""
import argparse
import dataclasses

from amr.fuse import fuse_files
from amr.params import Params
from amr.pipeline import PREDICT_SPLITS, predictions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--system", required=True)
    args = ap.parse_args()

    params = Params.load()
    fusion = params.fusion(args.system)
    proposals = dataclasses.replace(params.saliency_proposals, enabled=fusion.saliency_proposals)
    for split in PREDICT_SPLITS:
        members = [predictions(fusion.base, split, seed) for seed in params.fusion_members(args.system)]
        fused = fuse_files(members, predictions(args.system, split), proposals,
                           keep=params.inference.max_windows, clip_length=params.data.clip_length)
        print(f"{args.system} {split}: fused {len(members)} member(s), {len(fused)} queries", flush=True)


if __name__ == "__main__":
    main()
