"""`amr pack`: pack one annotation file + its feature folders into one HDF5 split."""
from __future__ import annotations

import argparse

HELP = "Pack annotations + npz features into one HDF5 file and a data-fault report."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("annotations", help="annotation JSONL (one query per line)")
    parser.add_argument("--audio-dir", required=True, help="folder of {vid}.npz audio features")
    parser.add_argument("--text-dir", required=True, help="folder of qid{qid}.npz text features")
    parser.add_argument("--out", required=True, help="HDF5 file to write, e.g. castella_train.h5")
    parser.add_argument("--name", help="split name in the manifest (default: the --out stem)")
    parser.add_argument("--feature-source", help="free text stored in the manifest")
    parser.add_argument("--no-strict", action="store_true",
                        help="skip and list broken feature files instead of failing")
    parser.add_argument("--max-audio-frames", type=int, default=300)
    parser.add_argument("--max-text-tokens", type=int, default=32)
    parser.add_argument("--feature-dim", type=int, default=768)
    parser.add_argument("--text-dim", type=int, default=768)
    parser.add_argument("--clip-length", type=float, default=1.0)
    parser.add_argument("--max-gt-length", type=float, default=1500.0)
    parser.add_argument("--length-tolerance", type=float, default=2.0,
                        help="seconds T * clip length may differ from the annotated duration")


def run(args: argparse.Namespace) -> int:
    from amr.config.schema import DataConfig
    from amr.data.pack import pack_split, summary_line

    cfg = DataConfig(
        feature_dim=args.feature_dim, text_dim=args.text_dim,
        max_audio_frames=args.max_audio_frames, max_text_tokens=args.max_text_tokens,
        clip_length=args.clip_length, max_gt_length=args.max_gt_length,
        strict=not args.no_strict,
    )
    report = pack_split(args.annotations, args.audio_dir, args.text_dir, args.out, cfg,
                        name=args.name, feature_source=args.feature_source,
                        length_tolerance_s=args.length_tolerance)
    print(summary_line(report))
    return 0
