"""``amr predict``: scored windows + per-frame saliency for every query of a packed split."""
from __future__ import annotations

HELP = (
    "Predict scored windows (<= 10 per query, best first, [start, end, score] in seconds) for "
    "every query of a packed split, including the blind evaluation list; writes PRED.jsonl and "
    "the per-frame saliency logits PRED.saliency.npz (key = qid)."
)


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="best.pt",
                        help="checkpoint written by amr train (holds the system config)")
    parser.add_argument("--data", required=True, metavar="SPLIT.h5", help="packed split")
    parser.add_argument("--out", required=True, metavar="PRED.jsonl")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--gt", metavar="ANNOTATIONS.jsonl",
                        help="also score the predictions against these annotations")


def run(args) -> int:
    import json
    import sys

    from amr.engine.predict import predict_split

    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    summary = predict_split(
        args.checkpoint, args.data, args.out, batch_size=args.batch_size,
        device=args.device, gt_path=args.gt, threads=args.threads,
    )
    print(
        f"{summary['queries']} queries in {summary['seconds']:.2f}s "
        f"({summary['queries_per_s']:.1f} queries/s on {summary['device']}) -> {args.out}"
    )
    if "metrics" in summary:
        print(json.dumps(summary["metrics"]))
    return 0
