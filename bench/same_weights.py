"""Are two pipeline runs' trained weights the same, bit for bit? Compares every
``runs/**/best.pt`` of two project folders tensor by tensor (the files themselves differ whenever
the code does: each records its run's code digest, ``identity.code``).

    python bench/same_weights.py RUN_A RUN_B      # e.g. two `bench/repro_stages.py --keep` folders

Prints one line per checkpoint, then ONE JSON line {"checkpoints": n, "identical": n,
"differing": [...]}; exits 1 when a checkpoint's weights differ or is missing from one side.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    names = sorted({p.relative_to(root).as_posix() for root in (args.a, args.b)
                    for p in root.glob("runs/**/best.pt")})
    differing = []
    for name in names:
        if not (args.a / name).exists() or not (args.b / name).exists():
            print(f"{name}: only in one run")
            differing.append(name)
            continue
        a, b = (torch.load(root / name, map_location="cpu", weights_only=False)["model"]
                for root in (args.a, args.b))
        same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        print(f"{name}: {'identical' if same else 'DIFFERENT'} ({len(a)} tensors)")
        if not same:
            differing.append(name)
    print(json.dumps({"checkpoints": len(names), "identical": len(names) - len(differing), "differing": differing}))
    return 1 if differing or not names else 0


if __name__ == "__main__":
    sys.exit(main())
