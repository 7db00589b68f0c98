"""``amr train``: one training stage (pre-train or fine-tune) of one system."""
from __future__ import annotations

HELP = (
    "Train one stage of one system (report §2.4): --stage pretrain on Clotho-Moment, then "
    "--stage finetune on CASTELLA with --init <pretrain run>/best.pt. Validates every epoch "
    "(official metrics), keeps best.pt (val R1@0.7) and last.pt, and resumes from last.pt when "
    "re-run. Multi-GPU: torchrun --nproc_per_node N -m amr train ... (DistributedDataParallel; "
    "each process takes --batch-size queries, so the effective batch is N x batch size)."
)


def add_arguments(parser) -> None:
    parser.add_argument("--params", metavar="params.yaml", default="params.yaml",
                        help="the project's parameters, whose systems: defines --system (default %(default)s)")
    parser.add_argument("--preset", metavar="NAME",
                        help="apply a budget preset to them first: paper, demo or a preset file")
    parser.add_argument("--system", required=True, metavar="NAME",
                        help="system to train, e.g. baseline, slot1, slot2, slot3")
    parser.add_argument("--stage", required=True, choices=["pretrain", "finetune"])
    parser.add_argument("--train", required=True, metavar="TRAIN.h5", help="packed training split")
    parser.add_argument("--val", required=True, metavar="VAL.h5",
                        help="packed validation split (model selection on R1@0.7)")
    parser.add_argument("--init", metavar="PRETRAINED.pt",
                        help="start from these model weights (fine-tuning: the pre-train best.pt)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR")
    parser.add_argument("--seed", type=int, help="overrides the configured seed")
    parser.add_argument("--restart", action="store_true",
                        help="discard checkpoints and logs in RUN_DIR instead of resuming")
    parser.add_argument("--epochs", type=int, help="override the stage's epochs")
    parser.add_argument("--lr", type=float, help="override the stage's learning rate")
    parser.add_argument("--batch-size", type=int, help="queries per step and per process")
    parser.add_argument("--threads", type=int, help="CPU threads (0: torch default)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--in-memory", action="store_true",
                        help="load all features into memory up front (small splits)")
    parser.add_argument("--progress", choices=["auto", "rich", "plain", "none"], default="auto",
                        help="auto: a progress bar on a terminal, else one line per epoch")


def build_configs(args):
    """(SystemConfig, TrainConfig, ScheduleConfig) of ``--system`` in ``--params`` (with
    ``--preset`` applied in memory); the command's flags win over the file."""
    import dataclasses

    from amr.config.params import Params

    params = Params.load(args.params, preset=args.preset)
    system_cfg, train_cfg, schedule = params.system(args.system), params.train, params.schedule(args.stage)
    flags = {"epochs": args.epochs, "lr": args.lr}
    schedule = dataclasses.replace(schedule, **{k: v for k, v in flags.items() if v is not None})
    flags = {"batch_size": args.batch_size, "threads": args.threads, "device": args.device}
    train_cfg = dataclasses.replace(train_cfg, **{k: v for k, v in flags.items() if v is not None})
    return system_cfg, train_cfg, schedule


def run(args) -> int:
    import json

    from amr.engine.train import train_stage

    system_cfg, train_cfg, schedule = build_configs(args)
    summary = train_stage(
        system_cfg, train_cfg, schedule, args.stage, args.train, args.val, args.out,
        init_from=args.init, seed=args.seed, restart=args.restart, workers=args.workers,
        in_memory=args.in_memory, progress=args.progress,
    )
    if summary is not None:  # rank 0 (every rank gets it; print once)
        import os

        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps({"best_epoch": summary["best_epoch"], **(summary["best"] or {})}))
    return 0
