"""Layer 11, the ``amr`` command line: parsing and dispatch only; each subcommand is a module of
this package (``HELP``, ``add_arguments(parser)``, ``run(args) -> int``), importing what it needs
inside ``run`` so that ``amr --help`` stays fast.

May import: every layer below.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> its module (kept sorted)
COMMANDS = {
    "ablations": "amr.cli.ablations",
    "compare": "amr.cli.compare",
    "demo-data": "amr.cli.demo_data",
    "describe-model": "amr.cli.describe_model",
    "evaluate": "amr.cli.evaluate",
    "fuse": "amr.cli.fuse",
    "pack": "amr.cli.pack",
    "package": "amr.cli.package",
    "pipeline": "amr.cli.pipeline",
    "predict": "amr.cli.predict",
    "profile": "amr.cli.profile",
    "train": "amr.cli.train",
    "validate-submission": "amr.cli.validate_submission",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amr", description="Audio moment retrieval from long audio (DCASE 2026 Task 6)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from amr.util.errors import AmrError

    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except AmrError as exc:  # bad input or configuration, named by the message: no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
