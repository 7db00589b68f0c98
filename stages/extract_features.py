"""Stage `extract-features`: raw audio + annotation files -> the official npz layout
(``data.source: extract``), resumable; the `features` stage then packs it."""
import argparse
from dataclasses import dataclass
from pathlib import Path

from amr.config.schema import ExtractSource
from amr.pipeline.stage import stage_main


@dataclass(frozen=True)
class Job:
    extract: ExtractSource
    strict: bool
    clip_length: float
    audio_dim: int
    text_dim: int
    max_text_tokens: int


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__)


def configure(params, args) -> Job:
    return Job(params.value("data.extract"), params.value("data.strict"),
               params.value("data.clip_length"), params.value("data.feature_dim"),
               params.value("data.text_dim"), params.value("data.max_text_tokens"))


def run(job: Job) -> None:
    from amr.data.annotations import DataError
    from amr.engine.device import choose_device
    from amr.extract.backends import ExtractError, make_backend
    from amr.extract.run import Settings, dataset_inputs, extract_all

    root, cfg = Path.cwd(), job.extract
    try:
        device = choose_device(cfg.device)
        backend = make_backend(cfg, device, job.audio_dim, job.text_dim, job.max_text_tokens)
        settings = Settings(job.clip_length, cfg.batch_size, cfg.workers, job.strict)
        extract_all(dataset_inputs(cfg, root), root / cfg.folder, backend, cfg.backend, settings)
    except (ExtractError, DataError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    stage_main(parser(), configure, run)
