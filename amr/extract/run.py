"""Extraction of one dataset (pretrain / finetune / evaluation) into the official npz layout.

    <folder>/extractor.json                 which extractor made the files (provenance)
    <folder>/<dataset>/audio/<vid>.npz       key ``features``, float32 (T, D)
    <folder>/<dataset>/text/qid<qid>.npz     key ``last_hidden_state``, float32 (n_tokens, D)
    <folder>/<dataset>.report.json          counts and every fault, item by item

Audio is decoded in worker processes while the model runs; windows from consecutive recordings
fill each encoder batch. Every file is written atomically and once complete; a rerun keeps the
valid files and does the rest, so a killed run continues where it stopped. A change of
extractor (backend, weights) empties the folder first: files of two extractors never mix.

Faults (``FAULTS``): with ``strict`` the first one stops the run naming the file; otherwise
each is listed in the report and the affected recording or query gets no file (the packing then
lists it again, so nothing is dropped silently).
"""
from __future__ import annotations

import io
import json
import zipfile
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from amr.data.annotations import DataError, read_annotations
from amr.data.features import (
    AUDIO_KEY,
    TEXT_KEY,
    audio_feature_path,
    load_feature_file,
    text_feature_path,
)
from amr.extract.audio import AudioError, cut_windows, decode
from amr.extract.backends import EmptyText, ExtractError
from amr.extract.inputs import AudioRef, index_locations
from amr.util.io import atomic_path, write_json

FAULTS = (
    "location_missing",  # an audio location in params does not exist
    "shard_unreadable",  # a .tar that cannot be read
    "tar_sample_without_audio",  # <key>.json without <key>.wav
    "tar_sample_without_json",  # <key>.wav without <key>.json: its vid is unknown
    "tar_json_without_bg_path",  # metadata without bg.path: its vid is unknown
    "audio_duplicate",  # a needed vid found in two places (the first is used)
    "audio_missing",  # a vid of the annotations with no audio
    "audio_unreadable",  # the decoder failed
    "audio_empty",  # no samples
    "text_empty",  # the query tokenises to special tokens only
)
EXTRACTOR_FILE = "extractor.json"
# zip entries get a fixed timestamp so that the same array always gives the same file bytes
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass
class DatasetInputs:
    name: str  # pretrain | finetune | evaluation
    annotations: list[Path]
    audio: list[Path]


@dataclass
class Settings:
    clip_length: float = 1.0
    batch_size: int = 256
    workers: int = 2
    strict: bool = True
    progress: bool = True


@dataclass
class _Faults:
    strict: bool
    items: dict[str, list] = field(default_factory=lambda: {k: [] for k in FAULTS})

    def add(self, kind: str, item: dict, message: str) -> None:
        self.items[kind].append(item)
        if self.strict:
            raise ExtractError(f"{message} [{kind}]. Fix the input, or set data.strict: false to "
                               "list such files in the extraction report and go on")


def write_npz(path: Path, key: str, array: np.ndarray) -> None:
    """An npz that ``np.load`` reads, with the same bytes for the same array (atomic)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array, dtype=np.float32),
                              allow_pickle=False)
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr(zipfile.ZipInfo(f"{key}.npy", ZIP_DATE), buffer.getvalue())


def _valid(path: Path, key: str, dim: int) -> bool:
    if not path.is_file():
        return False
    try:
        load_feature_file(path, key, dim)
    except DataError:
        return False
    return True


def _remove_leftovers(folder: Path) -> None:
    """Temporary files of a killed run (the atomic writer's ``.<name>.<pid>.<hex>.tmp``)."""
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def extractor_identity(backend, backend_kind: str, clip_length: float) -> dict:
    import soundfile
    import soxr

    return {
        "backend": backend_kind,
        "name": backend.name,
        "checkpoint_sha256": backend.checkpoint_sha256,
        "sample_rate": backend.sample_rate,
        "window_s": clip_length,
        "decoder": f"libsndfile {soundfile.__libsndfile_version__} + soxr {soxr.__version__} "
                   "(soxr_hq), mean of channels",
    }


def prepare_folder(folder: Path, identity: dict, datasets: list[str]) -> None:
    """Keep the folder's files when they were made by the same extractor; else empty it."""
    marker = folder / EXTRACTOR_FILE
    same = ("backend", "name", "checkpoint_sha256", "sample_rate", "window_s")
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = {}
        if any(previous.get(k) != identity[k] for k in same):
            import shutil

            print(f"{folder}: made by another extractor ({previous.get('name')}); starting over",
                  flush=True)
            for name in datasets:
                shutil.rmtree(folder / name, ignore_errors=True)
    write_json(marker, identity)


def _decode_windows(ref: AudioRef, sample_rate: int, window: int):
    """Worker: (ref, (T, window) float32 or None, fault kind, message)."""
    try:
        samples = decode(ref.read(), sample_rate, ref.name)
    except AudioError as exc:
        return ref, None, exc.kind, str(exc)
    except OSError as exc:
        return ref, None, "audio_unreadable", f"{ref.name}: cannot read ({exc})"
    return ref, cut_windows(samples, window), "", ""


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    disable=not enabled)


def extract_dataset(inputs: DatasetInputs, folder: Path, backend, settings: Settings) -> dict:
    """Extract one dataset below ``folder``; returns (and writes) its report."""
    faults = _Faults(settings.strict)
    audio_dir, text_dir = folder / inputs.name / "audio", folder / inputs.name / "text"
    for d in (audio_dir, text_dir):
        _remove_leftovers(d)

    queries: dict[str, tuple[str, str]] = {}  # qid -> (query, annotation file)
    durations: dict[str, float] = {}  # vid -> annotated duration, in order of first use
    for file in inputs.annotations:
        for q in read_annotations(file):
            queries.setdefault(q.qid, (q.query, str(file)))
            durations.setdefault(q.vid, q.duration)

    counts = {"queries": len(queries), "recordings": len(durations), "text_written": 0,
              "text_kept": 0, "recordings_written": 0, "recordings_kept": 0, "windows": 0}
    with _progress(settings.progress) as progress:
        _extract_text(queries, text_dir, backend, faults, counts, progress)
        refs = index_locations(inputs.audio, faults.items)
        dim = _probe_dim(backend)
        todo = _audio_todo(durations, refs, audio_dir, dim, faults, counts)
        _extract_audio(todo, durations, audio_dir, backend, dim, settings, faults, counts, progress)

    report = {"dataset": inputs.name, "folder": str(folder / inputs.name),
              "annotations": [str(p) for p in inputs.annotations],
              "audio": [str(p) for p in inputs.audio],
              "extractor": backend.name, "checkpoint_sha256": backend.checkpoint_sha256,
              "strict": settings.strict, "counts": counts,
              "fault_counts": {k: len(v) for k, v in faults.items.items()}, "faults": faults.items}
    write_json(folder / f"{inputs.name}.report.json", report, indent=1)
    return report


def _extract_text(queries, text_dir, backend, faults, counts, progress) -> None:
    dim = None
    task = progress.add_task("text", total=len(queries), rate="")
    for qid, (query, file) in queries.items():
        path = text_feature_path(text_dir, qid)
        if dim is not None and _valid(path, TEXT_KEY, dim):
            counts["text_kept"] += 1
        else:
            try:
                states = np.asarray(backend.encode_text(query), np.float32)
                if states.ndim != 2 or states.shape[0] == 0:
                    raise EmptyText(f"query {query!r} gives {states.shape} token states")
            except EmptyText as exc:
                faults.add("text_empty", {"qid": qid, "file": file, "query": query},
                           f"{file}: qid {qid}: {exc}")
                progress.advance(task)
                continue
            if dim is None and _valid(path, TEXT_KEY, states.shape[1]):
                counts["text_kept"] += 1  # the first query: its width is now known
            else:
                write_npz(path, TEXT_KEY, states)
                counts["text_written"] += 1
            dim = states.shape[1]
        progress.advance(task)


def _audio_todo(durations, refs, audio_dir, dim, faults, counts) -> list[AudioRef]:
    faults.items["audio_duplicate"] = [d for d in faults.items["audio_duplicate"]
                                       if d["vid"] in durations]  # only needed vids matter
    for kind in ("location_missing", "shard_unreadable", "tar_sample_without_audio",
                 "tar_sample_without_json", "tar_json_without_bg_path", "audio_duplicate"):
        if faults.strict and faults.items[kind]:
            item = faults.items[kind][0]
            raise ExtractError(f"{item['file']}: {kind} ({item}). Fix the input, or set "
                               "data.strict: false to list such files and go on")
    todo = []
    for vid in durations:
        if vid not in refs:
            faults.add("audio_missing", {"vid": vid}, f"no audio for vid {vid!r} in the audio "
                       "locations (data.extract.<dataset>.audio)")
            continue
        if _valid(audio_feature_path(audio_dir, vid), AUDIO_KEY, dim):
            counts["recordings_kept"] += 1
        else:
            todo.append(refs[vid])
    return todo


def _probe_dim(backend) -> int:
    return int(np.asarray(backend.encode_audio(np.zeros((1, backend.sample_rate), np.float32))).shape[1])


def _extract_audio(todo, durations, audio_dir, backend, dim, settings, faults, counts,
                   progress) -> None:
    window = int(round(settings.clip_length * backend.sample_rate))
    estimate = int(sum(durations[r.vid] for r in todo) / settings.clip_length)
    task = progress.add_task("audio windows", total=max(estimate, 1), rate="")
    pieces: deque = deque()  # (vid, first row, windows) waiting for the encoder
    waiting = 0
    partial: dict[str, list] = {}  # vid -> [rows array, rows done]

    def encode(final: bool) -> None:
        nonlocal waiting
        while waiting >= settings.batch_size or (final and waiting):
            parts, taken = [], 0
            while taken < settings.batch_size and pieces:
                vid, start, windows = pieces.popleft()
                k = min(settings.batch_size - taken, windows.shape[0])
                parts.append((vid, start, windows[:k]))
                if k < windows.shape[0]:
                    pieces.appendleft((vid, start + k, windows[k:]))
                taken += k
            waiting -= taken
            out = np.asarray(backend.encode_audio(np.concatenate([w for _, _, w in parts])),
                             np.float32)
            row = 0
            for vid, start, windows in parts:
                k = windows.shape[0]
                entry = partial[vid]
                entry[0][start:start + k] = out[row:row + k]
                entry[1] += k
                row += k
                if entry[1] == entry[0].shape[0]:
                    write_npz(audio_feature_path(audio_dir, vid), AUDIO_KEY, entry[0])
                    del partial[vid]
                    counts["recordings_written"] += 1
            counts["windows"] += taken
            elapsed = progress.tasks[task].elapsed or 0.0
            rate = f"{counts['windows'] / elapsed:,.0f} windows/s" if elapsed > 0 else ""
            progress.update(task, advance=taken, rate=rate)

    def take(result) -> None:
        nonlocal waiting
        ref, windows, kind, message = result
        vid = ref.vid
        if windows is None:
            faults.add(kind, {"vid": vid, "file": ref.name, "reason": message}, message)
            return
        partial[vid] = [np.empty((windows.shape[0], dim), np.float32), 0]
        pieces.append((vid, 0, windows))
        waiting += windows.shape[0]
        encode(final=False)

    args = (backend.sample_rate, window)
    if settings.workers <= 0:
        for ref in todo:
            take(_decode_windows(ref, *args))
    else:
        import multiprocessing

        # spawn: the workers never inherit the parent's CUDA or thread state
        executor = ProcessPoolExecutor(settings.workers, multiprocessing.get_context("spawn"))
        try:
            in_flight: deque = deque()
            queue = iter(todo)
            for ref in queue:  # keep a few recordings decoded ahead of the encoder, no more
                in_flight.append(executor.submit(_decode_windows, ref, *args))
                if len(in_flight) >= 2 * settings.workers + 2:
                    take(in_flight.popleft().result())
            while in_flight:
                take(in_flight.popleft().result())
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
    encode(final=True)
    progress.update(task, total=counts["windows"], completed=counts["windows"])


def extract_all(datasets: list[DatasetInputs], folder: Path, backend, backend_kind: str,
                settings: Settings) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    prepare_folder(folder, extractor_identity(backend, backend_kind, settings.clip_length),
                   [d.name for d in datasets])
    reports = []
    for inputs in datasets:
        report = extract_dataset(inputs, folder, backend, settings)
        faults = ", ".join(f"{k}={v}" for k, v in report["fault_counts"].items() if v) or "none"
        c = report["counts"]
        print(f"{inputs.name}: {c['recordings_written']} recordings written, "
              f"{c['recordings_kept']} kept, {c['text_written']} queries written, "
              f"{c['text_kept']} kept; faults: {faults}", flush=True)
        reports.append(report)
    return reports


def dataset_inputs(cfg, root: Path) -> list[DatasetInputs]:
    """The three datasets of ``data.extract`` (an :class:`amr.config.schema.ExtractSource`), paths
    resolved against ``root``."""
    from amr.data.sources import resolve

    out = []
    for name, splits in (("pretrain", ("train", "val")), ("finetune", ("train", "val", "test")),
                         ("evaluation", ("queries",))):
        block = getattr(cfg, name)
        where = f"data.extract.{name}"
        if not block.audio:
            raise ExtractError(f"params.yaml: {where}.audio is empty; list the audio folders")
        out.append(DatasetInputs(
            name, [resolve(root, getattr(block, s), f"{where}.{s}") for s in splits],
            [resolve(root, a, f"{where}.audio[{i}]") for i, a in enumerate(block.audio)]))
    return out
