"""What every stage script starts with: parse its arguments, load params.yaml, check that dvc.yaml
declares the stage (:mod:`amr.pipeline.dag`), configure its job from the params it declares, run.
"""
from __future__ import annotations

import argparse

from amr.pipeline.dag import check
from amr.util.errors import AmrError


def stage_main(parser: argparse.ArgumentParser, configure, run, argv: list[str] | None = None) -> None:
    """Entry of every stage script: parse, load params.yaml, check dvc.yaml, configure, run.

    ``run`` receives only what ``configure`` returned, so the stage uses exactly the params
    that dvc.yaml declares for it. An :class:`~amr.util.errors.AmrError` (bad params, data, missing
    inputs, a run that cannot go on) ends the stage with one ``error: ...`` line.
    """
    from amr.config.params import Params

    args = parser.parse_args(argv)
    try:
        params = Params.load()
        check(params)
        job = configure(params, args)
        run(job)
    except AmrError as exc:  # a problem with the inputs, named by its message: no traceback
        raise SystemExit(f"error: {exc}") from None
