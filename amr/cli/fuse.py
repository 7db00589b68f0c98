"""``amr fuse``: slot-4 score-level ensemble of member predictions + saliency-as-proposals."""
from __future__ import annotations

HELP = (
    "Fuse scored predictions of one or more models (report §3.6): pool all windows, re-sort "
    "by score, add saliency proposals from each member's <pred>.saliency.npz, keep the best."
)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--member", action="append", required=True, metavar="PRED.jsonl",
        help="predictions of one model (repeat for an ensemble); its saliency is read from "
        "PRED.saliency.npz",
    )
    parser.add_argument("--out", required=True, metavar="FUSED.jsonl")
    parser.add_argument(
        "--no-saliency", action="store_true", help="pool decoder windows only (no saliency proposals)"
    )
    parser.add_argument(
        "--threshold", type=float, default=None,
        help="saliency threshold on rho = sigmoid(r)/max sigmoid(r), inclusive (default 0.5)",
    )
    parser.add_argument(
        "--top-k", type=int, default=None, help="saliency proposals per member (default 10)"
    )
    parser.add_argument("--keep", type=int, default=10, help="windows kept per query (default 10)")
    parser.add_argument(
        "--clip-length", type=float, default=1.0, help="seconds per saliency frame (default 1.0)"
    )


def run(args) -> int:
    import sys

    from amr.config.schema import SaliencyProposalsConfig
    from amr.engine.fuse import fuse_files

    defaults = SaliencyProposalsConfig()
    proposals = None if args.no_saliency else SaliencyProposalsConfig(
        threshold=defaults.threshold if args.threshold is None else args.threshold,
        top_k=defaults.top_k if args.top_k is None else args.top_k,
    )
    if args.keep < 1:
        print("error: --keep must be at least 1 (every query needs a window)", file=sys.stderr)
        return 2
    fused = fuse_files(args.member, args.out, proposals, keep=args.keep, clip_length=args.clip_length)
    print(
        f"fused {len(args.member)} member(s), {len(fused)} queries, saliency proposals "
        f"{'on' if proposals else 'off'} -> {args.out}"
    )
    return 0
