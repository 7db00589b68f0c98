"""Stage `pretrain` / `finetune`: train one system at one seed (report §2.4)."""
import argparse

from amr.params import Params
from amr.pipeline import packed, run_dir
from amr.train import train_stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--system", required=True)
    ap.add_argument("--stage", required=True, choices=["pretrain", "finetune"])
    ap.add_argument("--seed", type=int, help="fine-tuning seed (pre-training uses train.seed)")
    args = ap.parse_args()

    params = Params.load()
    seed = args.seed if args.seed is not None else params.train.seed
    if args.stage == "pretrain":
        out, init = run_dir("pretrain", args.system), None
    else:
        out, init = run_dir("finetune", args.system, seed), run_dir("pretrain", args.system) / "best.pt"
    train_stage(
        params.system(args.system), params.train, args.stage,
        packed(f"{args.stage}_train"), packed(f"{args.stage}_val"), out,
        init_from=init, seed=seed, in_memory=True, restart_on_mismatch=True,
    )


if __name__ == "__main__":
    main()
