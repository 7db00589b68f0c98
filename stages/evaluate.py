"""Stage `evaluate`: official metrics of one system on development-testing (+ breakdowns)."""
import argparse

from amr.evaluation import evaluate_system
from amr.params import Params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--system", required=True)
    args = ap.parse_args()
    print(f"{args.system}: {evaluate_system(Params.load(), args.system)}", flush=True)


if __name__ == "__main__":
    main()
