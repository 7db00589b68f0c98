"""The ``amr`` command line: parsing and dispatch only; each subcommand lives in amr.commands."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module in amr.commands (kept sorted)
COMMANDS = {
    "ablations": "amr.commands.ablations",
    "compare": "amr.commands.compare",
    "demo-data": "amr.commands.demo_data",
    "describe-model": "amr.commands.describe_model",
    "evaluate": "amr.commands.evaluate",
    "fuse": "amr.commands.fuse",
    "pack": "amr.commands.pack",
    "package": "amr.commands.package",
    "pipeline": "amr.commands.pipeline",
    "predict": "amr.commands.predict",
    "profile": "amr.commands.profile",
    "train": "amr.commands.train",
    "validate-submission": "amr.commands.validate_submission",
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
    from amr.errors import AmrError

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
