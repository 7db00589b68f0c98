"""``amr demo-data OUT``: write the offline synthetic dataset (see :mod:`amr.data.demo`)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

HELP = (
    "Write a small synthetic dataset in the official layout (deterministic from --seed), or, "
    "with --annotations, synthetic grounded features for a given annotation file."
)


def _size_fields():
    from amr.data.demo import DemoSizes  # numpy only; keeps the field list in one place

    return DemoSizes, dataclasses.fields(DemoSizes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="output directory (created; a previous demo "
                        "dataset there is replaced)")
    parser.add_argument("--seed", type=int, default=0, help="generation seed (default: 0)")
    sizes_cls, fields = _size_fields()
    group = parser.add_argument_group("sizes (demo dataset only)")
    for f in fields:
        group.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f"size_{f.name}", type=type(f.default),
            default=None, metavar="N", help=f"default: {f.default}",
        )
    annotated = parser.add_argument_group("features for a given annotation file")
    annotated.add_argument("--annotations", type=Path, default=None,
                           help="annotation JSONL (official keys); only features are written")
    annotated.add_argument("--audio-dir", type=Path, default=None,
                           help="where {vid}.npz goes (default: OUT/audio)")
    annotated.add_argument("--text-dir", type=Path, default=None,
                           help="where qid{qid}.npz goes (default: OUT/text)")


def run(args: argparse.Namespace) -> int:
    from amr.data.annotations import DataError
    from amr.data.demo import make_demo_dataset, synthesise_features

    sizes_cls, fields = _size_fields()
    size_overrides = {f.name: getattr(args, f"size_{f.name}") for f in fields
                      if getattr(args, f"size_{f.name}") is not None}
    try:
        if args.annotations is not None:
            if size_overrides:
                names = ", ".join("--" + k.replace("_", "-") for k in size_overrides)
                print(f"amr demo-data: {names} apply to the demo dataset, not to --annotations",
                      file=sys.stderr)
                return 2
            summary = synthesise_features(
                args.annotations,
                args.audio_dir or args.out / "audio",
                args.text_dir or args.out / "text",
                seed=args.seed,
            )
            print(f"wrote {summary['audio_files']} audio and {summary['text_files']} text "
                  f"feature files for {args.annotations}")
            print(json.dumps(summary))
            return 0
        if args.audio_dir is not None or args.text_dir is not None:
            print("amr demo-data: --audio-dir/--text-dir need --annotations", file=sys.stderr)
            return 2
        manifest = make_demo_dataset(args.out, seed=args.seed, sizes=sizes_cls(**size_overrides))
    except (DataError, ValueError, FileExistsError) as exc:
        print(f"amr demo-data: {exc}", file=sys.stderr)
        return 2
    for name, split in manifest["splits"].items():
        print(f"{name:22s} {split['queries']:5d} queries {split['recordings']:5d} recordings "
              f"-> {args.out / split['annotations']}")
    planted = {f"{name}:{kind}": v["count"] for name, kinds in manifest["faults"].items()
               for kind, v in kinds.items() if v["count"]}
    print("planted faults: " + ", ".join(f"{k}={v}" for k, v in planted.items()))
    return 0
