"""Pack one (dataset, split) into a single HDF5 file, cleaning and counting every data fault.

Training then reads only this file: thousands of small npz files become two contiguous
arrays (audio frames, text tokens) addressed by offsets, plus per-query metadata.

HDF5 layout (queries in annotation order, recordings in order of first use; UTF-8 strings):

    attrs["manifest"]            JSON: counts, dims, limits, feature source, sha256 checksum
    audio/features  (F, Da)      float32 frames of all recordings, truncated to max_audio_frames
    audio/offsets   (R+1,)       recording r = features[offsets[r]:offsets[r+1]]
    audio/vid       (R,)
    text/features   (K, Dt)      float32 token states of all queries, truncated to max_text_tokens
    text/offsets    (Q+1,)
    query/qid, query/query, query/vid  (Q,)
    query/recording (Q,)         row of the query's recording in audio/*
    query/duration  (Q,)         seconds, as annotated
    query/windows   (Wtot, 2)    cleaned windows in seconds; query q = windows[wo[q]:wo[q+1]]
    query/window_offsets (Q+1,)
    query/has_gt    (Q,) bool    False for the blind evaluation list
    query/trainable (Q,) bool    has_gt and at least one valid window left after cleaning

Faults (SPEC §1) and what happens to them; each is counted and its items listed in the report
``<out stem>.report.json``:

    window_start_not_before_end      dropped
    window_longer_than_max_gt_length dropped (the official metric drops them too)
    window_end_past_duration         kept (counted: SPEC reports these counts per split)
    window_start_before_zero         clipped to 0
    window_end_past_features         clipped to T * clip_length
    window_start_past_features       dropped (nothing of it is inside the features)
    query_without_valid_window       stored, flagged not trainable (kept for evaluation)
    recording_length_differs_from_duration  counted, with a histogram of T*clip - duration
    recording_length_mismatch        |T*clip - duration| > length_tolerance_s (the real data
                                     differs by up to 2 s): strict fails naming the file;
                                     otherwise the recording is skipped (features of another
                                     recording, or a broken extraction)
    recording_truncated / query_text_truncated  cut to max_audio_frames / max_text_tokens
    recording_skipped / query_skipped  broken feature files, only with strict=False
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from amr.config.schema import DataConfig
from amr.data.annotations import DataError, Query, read_annotations
from amr.data.features import (
    AUDIO_KEY,
    TEXT_KEY,
    audio_feature_path,
    load_feature_file,
    text_feature_path,
)
from amr.util.io import atomic_path, write_json

FORMAT_VERSION = 1
FAULTS = (
    "window_start_not_before_end",
    "window_longer_than_max_gt_length",
    "window_end_past_duration",
    "window_start_before_zero",
    "window_end_past_features",
    "window_start_past_features",
    "query_without_valid_window",
    "recording_length_differs_from_duration",
    "recording_length_mismatch",
    "recording_truncated",
    "query_text_truncated",
    "recording_skipped",
    "query_skipped",
)
STRING = h5py.string_dtype("utf-8")


def report_path(h5_path: str | Path) -> Path:
    """``castella_train.h5`` -> ``castella_train.report.json`` (same folder)."""
    h5_path = Path(h5_path)
    return h5_path.with_name(h5_path.stem + ".report.json")


def clean_windows(
    q: Query, n_frames: int, cfg: DataConfig, faults: dict[str, list]
) -> list[tuple[float, float]]:
    """Valid windows of ``q`` in seconds, clipped to the (truncated) features; faults logged."""
    limit = n_frames * cfg.clip_length
    kept = []
    for s, e in q.windows or []:
        item = {"qid": q.qid, "window": [s, e]}
        if e > q.duration:
            faults["window_end_past_duration"].append(item)
        # The two official drop rules apply to the window as annotated, before any clipping.
        if s >= e:
            faults["window_start_not_before_end"].append(item)
            continue
        if e - s > cfg.max_gt_length:
            faults["window_longer_than_max_gt_length"].append(item)
            continue
        if s < 0:
            faults["window_start_before_zero"].append(item)
            s = 0.0
        if s >= limit:
            faults["window_start_past_features"].append(item)
            continue
        if e > limit:
            faults["window_end_past_features"].append(item)
            e = limit
        kept.append((s, e))
    return kept


def length_mismatch(path: Path, n_frames: int, duration: float, cfg: DataConfig,
                    tolerance_s: float) -> str:
    """'' when T * clip_length is within ``tolerance_s`` of the annotated duration, else why not."""
    difference = n_frames * cfg.clip_length - duration
    if abs(difference) <= tolerance_s + 1e-9:
        return ""
    return (f"{path}: {n_frames} frames ({n_frames * cfg.clip_length:g} s) for a recording "
            f"annotated as {duration:g} s long ({difference:+g} s, more than the "
            f"{tolerance_s:g} s tolerance): features of another recording or a broken "
            "extraction; re-extract this file")


def _check_length(
    vid: str, frames: np.ndarray, duration: float, cfg: DataConfig, faults: dict[str, list],
    length_differences: Counter,
) -> np.ndarray:
    """Count T * clip_length != duration (with its histogram); truncate to max_audio_frames."""
    n_raw = frames.shape[0]
    difference = round(n_raw * cfg.clip_length - duration, 3)
    if difference != 0:
        faults["recording_length_differs_from_duration"].append(
            {"vid": vid, "frames": n_raw, "duration": duration}
        )
        length_differences[f"{difference:+g}"] += 1
    if n_raw > cfg.max_audio_frames:
        faults["recording_truncated"].append({"vid": vid, "frames": n_raw})
        frames = frames[: cfg.max_audio_frames]
    return frames


class _RowSpool:
    """Float32 rows of unknown total count, spooled to a raw scratch file while packing and
    then written as one contiguous HDF5 dataset (contiguous slices read fastest)."""

    def __init__(self, path: Path, dim: int):
        self.path, self.dim, self.rows = path, dim, 0
        self._fh = path.open("wb")

    def append(self, rows: np.ndarray) -> None:
        self._fh.write(np.ascontiguousarray(rows, dtype=np.float32).tobytes())
        self.rows += rows.shape[0]

    def write_to(self, h5: h5py.File, name: str, block: int = 1 << 16) -> None:
        self._fh.close()
        dataset = h5.create_dataset(name, (self.rows, self.dim), np.float32)
        spooled = np.memmap(self.path, np.float32, "r", shape=(self.rows, self.dim))
        for start in range(0, self.rows, block):
            dataset[start: start + block] = spooled[start: start + block]
        del spooled

    def __enter__(self) -> _RowSpool:
        return self

    def __exit__(self, *exc) -> None:
        """The scratch file goes away whatever happened."""
        self._fh.close()
        self.path.unlink(missing_ok=True)


def _file_digest(blob: bytes, path: Path) -> bytes:
    # File name (not full path) + content: moving the feature folder keeps the checksum.
    return path.name.encode() + b"\0" + hashlib.sha256(blob).digest()


def pack_split(
    annotations: str | Path,
    audio_dir: str | Path,
    text_dir: str | Path,
    out: str | Path,
    cfg: DataConfig,
    name: str | None = None,
    feature_source: str | None = None,
    extractor: dict | None = None,
    length_tolerance_s: float = 2.0,
) -> dict:
    """Pack one split into ``out`` (HDF5) and write its fault report; returns the report.

    With ``cfg.strict`` a broken or missing feature file raises :class:`DataError` naming it
    and nothing is written; otherwise the affected recordings/queries are skipped and listed.
    The same for a recording whose frame count is further than ``length_tolerance_s`` from its
    annotated duration. ``extractor`` (what made the features) is stored in the manifest.
    """
    annotations, out = Path(annotations), Path(out)
    queries = read_annotations(annotations)
    name = name or out.stem
    faults: dict[str, list] = {key: [] for key in FAULTS}
    length_differences: Counter = Counter()
    checksum = hashlib.sha256(annotations.read_bytes())
    files_hashed = 1

    by_recording: dict[str, list[Query]] = {}
    for q in queries:
        by_recording.setdefault(q.vid, []).append(q)

    packed: list[tuple[Query, int, list, bool]] = []  # (query, recording row, windows, trainable)
    # the packed file appears at the end of this block, after its report
    with (
        atomic_path(out) as tmp,
        _RowSpool(tmp.with_suffix(".audio"), cfg.feature_dim) as audio,
        _RowSpool(tmp.with_suffix(".text"), cfg.text_dim) as text,
    ):
        audio_offsets, text_offsets, vids = [0], [0], []
        recordings: dict[str, tuple[int, int] | None] = {}  # vid -> (row, T) or None
        for q in queries:  # annotation order is kept in the file
            if q.vid not in recordings:
                path = audio_feature_path(audio_dir, q.vid)
                try:
                    frames, blob = load_feature_file(path, AUDIO_KEY, cfg.feature_dim)
                    mismatch = length_mismatch(path, frames.shape[0], q.duration, cfg,
                                               length_tolerance_s)
                    if mismatch:
                        faults["recording_length_mismatch"].append(
                            {"vid": q.vid, "file": str(path), "frames": frames.shape[0],
                             "duration": q.duration})
                        raise DataError(mismatch)
                except DataError as exc:
                    if cfg.strict:
                        raise
                    faults["recording_skipped"].append(
                        {"vid": q.vid, "file": str(path), "reason": str(exc),
                         "qids": [r.qid for r in by_recording[q.vid]]}
                    )
                    recordings[q.vid] = None
                else:
                    checksum.update(_file_digest(blob, path))
                    files_hashed += 1
                    frames = _check_length(q.vid, frames, q.duration, cfg, faults,
                                           length_differences)
                    audio.append(frames)
                    audio_offsets.append(audio_offsets[-1] + frames.shape[0])
                    recordings[q.vid] = (len(vids), frames.shape[0])
                    vids.append(q.vid)
            if recordings[q.vid] is None:
                continue  # listed with its recording
            row, n_frames = recordings[q.vid]

            tpath = text_feature_path(text_dir, q.qid)
            try:
                tokens, tblob = load_feature_file(tpath, TEXT_KEY, cfg.text_dim)
            except DataError as exc:
                if cfg.strict:
                    raise
                faults["query_skipped"].append(
                    {"qid": q.qid, "file": str(tpath), "reason": str(exc)}
                )
                continue
            checksum.update(_file_digest(tblob, tpath))
            files_hashed += 1
            if tokens.shape[0] > cfg.max_text_tokens:
                faults["query_text_truncated"].append({"qid": q.qid, "tokens": tokens.shape[0]})
                tokens = tokens[: cfg.max_text_tokens]
            text.append(tokens)
            text_offsets.append(text_offsets[-1] + tokens.shape[0])
            windows = clean_windows(q, n_frames, cfg, faults)
            trainable = q.windows is not None and bool(windows)
            if q.windows is not None and not windows:
                faults["query_without_valid_window"].append(q.qid)
            packed.append((q, row, windows, trainable))

        if not packed:
            raise DataError(f"{annotations}: no query could be packed (see skipped files)")
        with h5py.File(tmp, "w") as h5:
            audio.write_to(h5, "audio/features")
            text.write_to(h5, "text/features")
            window_offsets = np.cumsum([0] + [len(w) for _, _, w, _ in packed])
            all_windows = [w for _, _, ws, _ in packed for w in ws]
            h5["audio/offsets"] = np.asarray(audio_offsets, np.int64)
            h5.create_dataset("audio/vid", data=vids, dtype=STRING)
            h5["text/offsets"] = np.asarray(text_offsets, np.int64)
            for key, values in (("qid", [p[0].qid for p in packed]),
                                ("query", [p[0].query for p in packed]),
                                ("vid", [p[0].vid for p in packed])):
                h5.create_dataset(f"query/{key}", data=values, dtype=STRING)
            h5["query/recording"] = np.asarray([p[1] for p in packed], np.int64)
            h5["query/duration"] = np.asarray([p[0].duration for p in packed], np.float64)
            h5["query/windows"] = np.asarray(all_windows, np.float64).reshape(-1, 2)
            h5["query/window_offsets"] = window_offsets.astype(np.int64)
            h5["query/has_gt"] = np.asarray([p[0].windows is not None for p in packed], bool)
            h5["query/trainable"] = np.asarray([p[3] for p in packed], bool)

            manifest = {
                "format_version": FORMAT_VERSION,
                "name": name,
                "annotations": str(annotations),
                "audio_dir": str(audio_dir),
                "text_dir": str(text_dir),
                "feature_source": feature_source or f"npz audio={audio_dir} text={text_dir}",
                "feature_extractor": extractor or {},
                "length_tolerance_s": length_tolerance_s,
                "counts": {
                    "queries": len(packed),
                    "trainable_queries": sum(p[3] for p in packed),
                    "recordings": len(vids),
                    "frames": audio_offsets[-1],
                    "text_tokens": text_offsets[-1],
                    "windows": len(all_windows),
                },
                "dims": {"audio": cfg.feature_dim, "text": cfg.text_dim},
                "max_audio_frames": cfg.max_audio_frames,
                "max_text_tokens": cfg.max_text_tokens,
                "clip_length": cfg.clip_length,
                "max_gt_length": cfg.max_gt_length,
                "strict": cfg.strict,
                "checksum_sha256": checksum.hexdigest(),
                "checksum_files": files_hashed,
            }
            h5.attrs["manifest"] = json.dumps(manifest)
        report = {
            "name": name,
            "out": str(out),
            "input": {"queries": len(queries), "recordings": len(by_recording)},
            "manifest": manifest,
            "fault_counts": {key: len(items) for key, items in faults.items()},
            "recording_length_minus_duration_s": dict(sorted(length_differences.items())),
            "faults": faults,
        }
        write_json(report_path(out), report, indent=1)
    return report


def summary_line(report: dict) -> str:
    """One line: what was packed and every non-zero fault count."""
    counts = report["manifest"]["counts"]
    faults = ", ".join(f"{k}={v}" for k, v in report["fault_counts"].items() if v) or "none"
    return (
        f"{report['name']}: packed {counts['queries']}/{report['input']['queries']} queries "
        f"({counts['trainable_queries']} trainable), {counts['recordings']}/"
        f"{report['input']['recordings']} recordings -> {report['out']}; faults: {faults}"
    )
