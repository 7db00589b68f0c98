"""``amr evaluate PRED.jsonl GT.jsonl``: the official metrics as one JSON object."""
from __future__ import annotations

import json

HELP = "Score predictions against ground truth with the official metrics (SPEC §3)."


def add_arguments(parser) -> None:
    parser.add_argument("predictions", help="predictions JSONL (qid, pred_relevant_windows)")
    parser.add_argument("ground_truth", help="annotation JSONL (qid, relevant_windows)")
    parser.add_argument("--details", action="store_true",
                        help="add R1/mAP at every IoU threshold and breakdowns by GT-window "
                             "length and by number of GT windows per query")
    parser.add_argument("--out", help="also write the JSON object to this file")


def run(args) -> int:
    from amr.evaluation.metrics import evaluate_predictions, load_jsonl
    from amr.evaluation.prediction_files import read_predictions

    preds = read_predictions(args.predictions)
    gt = load_jsonl(args.ground_truth)
    result = evaluate_predictions(preds, gt, details=args.details)
    text = json.dumps(result, indent=2 if args.details else None)
    print(text)
    if args.out:
        from amr.util.io import write_text_atomic

        write_text_atomic(args.out, text + "\n")
    return 0
