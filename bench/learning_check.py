"""Do the systems learn on realistic data, on every seed? Real annotations, synthesised features,
two references, the ranking diagnostics of ``amr.evaluation.ranking``.

The annotation files are the real ones (Clotho-Moment for pre-training; CASTELLA for
fine-tuning, validation and a held-out test: 4-s moments in 300-s recordings), sliced by whole
recordings in file order; the features are synthesised for them (``amr demo-data
--annotations``: every query's event sounds at its windows through a hidden linear
words-to-audio mapping). Each system is pre-trained and fine-tuned once per seed (``--seeds``)
with the budget of params.yaml (the demo preset unless changed; ``--epochs`` and ``--lr``
override it); the best validation epoch is scored on the held-out test queries, beside two
references computed here on the same queries:

- whole recording: one window [0, duration] per query (what a model that ignores time scores);
- linear probe: closed-form ridge regression from the mean text token state to the mean
  in-window audio frame minus the recording's mean frame, fitted on the fine-tuning training
  queries; a recording's frames are scored by cosine with the predicted signature, runs of
  frames above ``PROBE_THRESHOLD`` x the best score are the windows (best first). The features
  are made linearly, so this is close to the best a model can do on them.

Beside R1 and mAP each run reports how it ranks its own windows (``amr.evaluation.ranking``): the
within-query Spearman correlation of score and IoU, the within-query score spread, the top-10
oracle R1@0.5 and the encoder memory's frame-to-frame variation; a seed whose score spread is
below a tenth of another seed's is flagged as collapsed.

    python bench/learning_check.py --data DIR [--seeds 2023 42] [--systems baseline slot3] [--quick]
    python bench/learning_check.py --work DIR --merge DIR_A DIR_B   # runs made in parallel

Budget (full): 800 + 200 Clotho-Moment queries, the whole CASTELLA train and validation splits
and 400 CASTELLA test queries, params.yaml's epochs, batch size and rates. ``--quick``: a quarter
of the queries and of the epochs. Writes ``<work>/curves/<system>-seed<N>.csv`` (per-epoch losses,
val metrics and diagnostics of fine-tuning), their figure ``<work>/curves/learning_check.png``
(``--replot`` redraws it from a finished run) and ``<work>/learning_check.json``; prints a table
and ends with ONE JSON line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

ANNOTATIONS = {  # split -> (file in --data, queries in the full budget (0: all), in --quick)
    "pretrain_train": ("clotho_moment_val_release.jsonl", 800, 200),
    "pretrain_val": ("clotho_moment_test_release.jsonl", 200, 60),
    "finetune_train": ("castella_train_release.jsonl", 0, 400),
    "finetune_val": ("castella_val_release.jsonl", 0, 100),
    "finetune_test": ("castella_test_release.jsonl", 400, 100),
}
PROBE_RIDGE = 0.1  # ridge penalty of the linear probe (on L2-normalised inputs)
PROBE_THRESHOLD = 0.5  # a frame is in a window when its score is above this x the best score
KEYS = ("R1@0.5", "R1@0.7", "mAP")
DIAGNOSTICS = ("rank_spearman", "score_spread", "oracle_R1@0.5", "memory_variation")


# ---------------------------------------------------------------------------------------------
# Data: sliced real annotations + synthesised features, packed
# ---------------------------------------------------------------------------------------------
def slice_annotations(source: Path, queries: int, out: Path) -> int:
    """The first ``queries`` queries of ``source``, extended to whole recordings; -> count."""
    kept, vids = [], set()
    with source.open() as fh:
        for line in fh:
            record = json.loads(line)
            if queries and len(kept) >= queries and record["vid"] not in vids:
                break
            vids.add(record["vid"])
            kept.append(line if line.endswith("\n") else line + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(kept))
    return len(kept)


def prepare_data(data: Path, work: Path, quick: bool, cfg) -> dict[str, Path]:
    from amr.data.demo import synthesise_features
    from amr.data.pack import pack_split

    packed = {}
    for split, (name, full, small) in ANNOTATIONS.items():
        source = data / name
        if not source.is_file():
            raise SystemExit(f"{source}: annotation file not found; pass --data DIR holding {name}")
        annotations = work / "annotations" / f"{split}.jsonl"
        slice_annotations(source, small if quick else full, annotations)
        features = work / "features" / split  # per split: a vid of two splits cannot clash
        synthesise_features(annotations, features / "audio", features / "text", seed=0)
        packed[split] = work / "packed" / f"{split}.h5"
        pack_split(annotations, features / "audio", features / "text", packed[split], cfg, name=split)
    return packed


# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------
def _probe_rows(dataset):
    from amr.data.dataset import audio_inputs, text_inputs

    for row in range(len(dataset.qids)):
        rec = dataset.recording[row]
        frames = audio_inputs(dataset._features("audio", dataset.audio_offsets[rec],
                                                dataset.audio_offsets[rec + 1])).numpy()[:, :-2]
        text = text_inputs(dataset._features("text", dataset.text_offsets[row],
                                             dataset.text_offsets[row + 1])).numpy().mean(0)
        windows = dataset.windows[dataset.window_offsets[row]: dataset.window_offsets[row + 1]]
        yield frames - frames.mean(0), text, windows


def fit_linear_probe(train) -> np.ndarray:
    """Ridge (dual form: fewer queries than dimensions) from text mean to in-window offset."""
    xs, ys = [], []
    for centred, text, windows in _probe_rows(train):
        inside = np.zeros(len(centred), bool)
        for s, e in windows:
            inside[int(np.floor(s)): int(np.ceil(e))] = True
        if inside.any():
            xs.append(text)
            ys.append(centred[inside].mean(0))
    x, y = np.stack(xs), np.stack(ys)
    return y.T @ np.linalg.solve(x @ x.T + PROBE_RIDGE * np.eye(len(x)), x)


def probe_predictions(weights: np.ndarray, dataset) -> list[dict]:
    records = []
    for row, (centred, text, _) in enumerate(_probe_rows(dataset)):
        signature = weights @ text
        score = centred @ signature / (np.linalg.norm(centred, axis=1) * np.linalg.norm(signature) + 1e-8)
        above = np.concatenate([[False], score > PROBE_THRESHOLD * score.max(), [False]])
        edges = np.flatnonzero(np.diff(above.astype(int)))
        windows = [[float(s), float(e), float(score[s:e].mean())] for s, e in zip(edges[::2], edges[1::2])]
        windows.sort(key=lambda w: -w[2])
        records.append({"qid": dataset.qids[row], "pred_relevant_windows": windows[:10]})
    return records


def references(packed: dict[str, Path], cfg) -> dict[str, dict]:
    """The two references on the held-out test queries."""
    from amr.data.dataset import MomentDataset
    from amr.engine.predict import ground_truth_records
    from amr.evaluation.metrics import evaluate_predictions

    train = MomentDataset(packed["finetune_train"], cfg.data, train=False, in_memory=True)
    test = MomentDataset(packed["finetune_test"], cfg.data, train=False, in_memory=True)
    gt = ground_truth_records(test)
    whole = [{"qid": g["qid"], "pred_relevant_windows": [[0.0, g["duration"], 1.0]]} for g in gt]
    return {
        "whole recording": evaluate_predictions(whole, gt),
        "linear probe": evaluate_predictions(probe_predictions(fit_linear_probe(train), test), gt),
    }


# ---------------------------------------------------------------------------------------------
# Training, then the held-out test
# ---------------------------------------------------------------------------------------------
def train_system(params, system: str, seed: int, packed: dict[str, Path], work: Path, args) -> dict:
    import math

    from amr.data.dataset import MomentDataset, eval_loader
    from amr.engine.predict import ground_truth_records, load_model_from_checkpoint, run_inference
    from amr.engine.train import train_stage
    from amr.evaluation.metrics import evaluate_predictions
    from amr.evaluation.ranking import MemoryProbe, ranking_diagnostics
    from amr.reporting.systems import training_curves

    cfg, train_cfg = params.system(system), params.train
    if args.threads:
        train_cfg = dataclasses.replace(train_cfg, threads=args.threads)
    result = {"seed": seed}
    init = None
    for stage in ("pretrain", "finetune"):
        schedule = params.schedule(stage)
        epochs = args.epochs.get(stage, schedule.epochs)
        if args.quick:
            epochs = max(1, epochs // 4)
        schedule = dataclasses.replace(schedule, epochs=epochs, lr=args.lr.get(stage, schedule.lr))
        out = work / "runs" / stage / system / f"seed-{seed}"
        t0 = time.perf_counter()
        summary = train_stage(cfg, train_cfg, schedule, stage, packed[f"{stage}_train"],
                              packed[f"{stage}_val"], out, init_from=init, seed=seed, in_memory=True,
                              progress="plain", restart_on_mismatch=True)
        init = out / "best.pt"
        queries = len(MomentDataset(packed[f"{stage}_train"], cfg.data, train=True))
        result[stage] = {"epochs": epochs, "lr": schedule.lr, "seconds": round(time.perf_counter() - t0, 1),
                         "steps": epochs * math.ceil(queries / train_cfg.batch_size),
                         "best_val": {k: summary["best"][k] for k in KEYS}, "best_epoch": summary["best_epoch"]}

    model, model_cfg, _ = load_model_from_checkpoint(init)
    test = MomentDataset(packed["finetune_test"], model_cfg.data, train=False, in_memory=True)
    gt = ground_truth_records(test)
    probe = MemoryProbe(model)
    records, _ = run_inference(model, eval_loader(test, train_cfg.eval_batch_size), model_cfg)
    probe.close()
    metrics = evaluate_predictions(records, gt)
    result["test"] = {**{k: metrics[k] for k in KEYS}, **ranking_diagnostics(records, gt),
                      "memory_variation": probe.mean()}
    curves = training_curves(work / "runs" / "finetune" / system / f"seed-{seed}")
    write_curves(work / "curves" / f"{system}-seed{seed}.csv", curves)
    result["curve"] = [{"epoch": r["epoch"], **{f"val/{k}": r.get(f"val/{k}") for k in ("R1@0.7", *DIAGNOSTICS)}}
                       for r in curves]
    return result


def write_curves(path: Path, rows: list[dict]) -> None:
    import csv

    from amr.util.io import atomic_path

    columns = sorted({k for r in rows for k in r} - {"epoch"})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["epoch", *columns])
        writer.writeheader()
        writer.writerows(rows)


LOSS_TERMS = ("train/loss_span", "train/loss_giou", "train/loss_label", "train/loss_saliency")


def plot_curves(work: Path, summary: dict) -> Path:
    """``<work>/curves/learning_check.png``: per system, val R1@0.7 and the within-query score
    spread per fine-tuning epoch for every seed (left), and the loss terms of the last decoder
    layer of its first seed (right)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    systems = list(summary["systems"])
    fig, axes = plt.subplots(len(systems), 2, figsize=(10, 3.2 * len(systems)), squeeze=False)
    for (left, right), system in zip(axes, systems):
        spread = left.twinx()
        for i, run in enumerate(summary["systems"][system]):
            with open(work / "curves" / f"{system}-seed{run['seed']}.csv", newline="") as fh:
                rows = list(csv.DictReader(fh))
            epochs = [int(r["epoch"]) for r in rows]
            line, = left.plot(epochs, [float(r["val/R1@0.7"]) for r in rows], marker="o", ms=3,
                              label=f"seed {run['seed']}: val R1@0.7")
            spread.plot(epochs, [float(r["val/score_spread"]) for r in rows], linestyle=":",
                        color=line.get_color(), label=f"seed {run['seed']}: score spread")
            if i == 0:
                for term in LOSS_TERMS:
                    if rows and rows[0].get(term):
                        right.plot(epochs, [float(r[term]) for r in rows], label=term.split("/")[1])
        left.set(title=f"{system}: val R1@0.7 (solid), score spread (dotted)", xlabel="fine-tuning epoch",
                 ylim=(0, 100))
        spread.set(ylim=(0, None))
        left.legend(fontsize=7, loc="upper left")
        right.set(title=f"{system}: training losses (first seed)", xlabel="fine-tuning epoch", yscale="log")
        right.legend(fontsize=8)
    fig.tight_layout()
    out = work / "curves" / "learning_check.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def mean_sd(values: list[float]) -> str:
    import statistics

    if len(values) < 2:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def collapsed_seeds(runs: list[dict]) -> list[int]:
    """Seeds whose test score spread is below a tenth of another seed's."""
    best = max(r["test"]["score_spread"] for r in runs)
    return [r["seed"] for r in runs if r["test"]["score_spread"] < 0.1 * best]


def report(summary: dict) -> str:
    columns = (*KEYS, *DIAGNOSTICS)
    heads = ("R1@0.5", "R1@0.7", "mAP", "Spearman", "spread", "oracle", "mem var")
    lines = [f"CASTELLA test ({summary['test_queries']} held-out queries), best validation epoch; "
             f"{summary['finetune_steps']} fine-tuning steps per run",
             "| run | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for name, metrics in summary["references"].items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[k]:.2f}" for k in KEYS) + " | – | – | – | – |")
    for system, runs in summary["systems"].items():
        for r in runs:
            lines.append(f"| {system} seed {r['seed']} | "
                         + " | ".join(f"{r['test'][k]:.2f}" if k in KEYS or k == "oracle_R1@0.5"
                                      else f"{r['test'][k]:.3f}" for k in columns) + " |")
        lines.append(f"| **{system} mean ± sd** | "
                     + " | ".join(mean_sd([r["test"][k] for r in runs]) for k in columns) + " |")
    for system, seeds in summary["collapsed"].items():
        lines.append("")
        lines.append(f"{system}: " + (f"collapsed seeds {seeds}" if seeds else "no seed collapsed")
                     + " (score spread below a tenth of another seed's)")
    return "\n".join(lines)


def merge_runs(parts: list[Path], work: Path) -> None:
    """One summary (and curves folder) in ``work`` from finished runs on the same data."""
    import shutil

    summaries = [json.loads((part / "learning_check.json").read_text()) for part in parts]
    for other in summaries[1:]:
        if other["references"] != summaries[0]["references"] or other["quick"] != summaries[0]["quick"]:
            raise SystemExit("--merge: the runs were made on different data (their references differ)")
    merged = {**summaries[0], "seconds": max(s["seconds"] for s in summaries),
              "systems": {k: v for s in summaries for k, v in s["systems"].items()},
              "collapsed": {k: v for s in summaries for k, v in s["collapsed"].items()}}
    (work / "curves").mkdir(parents=True, exist_ok=True)
    for part in parts:
        for curve in (part / "curves").glob("*.csv"):
            shutil.copy2(curve, work / "curves" / curve.name)
    (work / "learning_check.json").write_text(json.dumps(merged, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
def parse_overrides(values: list[str], kind) -> dict:
    """``pretrain=30 finetune=40`` -> {"pretrain": 30, "finetune": 40}."""
    out = {}
    for item in values or []:
        stage, _, value = item.partition("=")
        if stage not in ("pretrain", "finetune") or not value:
            raise SystemExit(f"expected pretrain=VALUE or finetune=VALUE, got {item!r}")
        out[stage] = kind(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path,
                    help="folder of the real annotation files (castella_*_release.jsonl, "
                         "clotho_moment_*_release.jsonl, e.g. as "
                         "`data.source: download` fetches them)")
    ap.add_argument("--work", type=Path, default=Path("runs/learning_check"))
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--systems", nargs="+", default=["baseline", "slot3"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[2023, 42])
    ap.add_argument("--quick", action="store_true", help="a quarter of the queries and epochs")
    ap.add_argument("--epochs", nargs="*", default=[], metavar="STAGE=N",
                    help="override params.yaml's epochs, e.g. finetune=20")
    ap.add_argument("--lr", nargs="*", default=[], metavar="STAGE=LR")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: params.yaml's)")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw the figure and the table from the finished run in --work")
    ap.add_argument("--merge", nargs="+", type=Path, default=[], metavar="WORK",
                    help="combine finished runs of other systems (e.g. run in parallel, one per "
                         "core) into --work, then redraw the figure and the table")
    args = ap.parse_args()
    if args.merge:
        merge_runs(args.merge, args.work)
        args.replot = True
    if args.replot:
        summary = json.loads((args.work / "learning_check.json").read_text())
        print(report(summary))
        print(plot_curves(args.work, summary))
        return
    if args.data is None:
        ap.error("--data is required (unless --replot)")
    args.epochs, args.lr = parse_overrides(args.epochs, int), parse_overrides(args.lr, float)

    from amr.config.params import Params
    from amr.data.dataset import MomentDataset

    params = Params.load(args.params)
    cfg = params.system(args.systems[0])
    t0 = time.perf_counter()
    packed = prepare_data(args.data, args.work, args.quick, cfg.data)
    refs = references(packed, cfg)
    systems = {name: [train_system(params, name, seed, packed, args.work, args) for seed in args.seeds]
               for name in args.systems}
    first = next(iter(systems.values()))[0]
    summary = {
        "quick": args.quick,
        "seconds": round(time.perf_counter() - t0, 1),
        "test_queries": len(MomentDataset(packed["finetune_test"], cfg.data, train=False)),
        "finetune_steps": first["finetune"]["steps"],
        "references": {name: {k: m[k] for k in KEYS} for name, m in refs.items()},
        "systems": systems,
        "collapsed": {name: collapsed_seeds(runs) for name, runs in systems.items()},
    }
    (args.work / "learning_check.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(report(summary))
    print(f"figure: {plot_curves(args.work, summary)}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
