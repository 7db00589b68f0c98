"""Loading throughput: one npz file pair per item versus the packed HDF5 split.

Writes a synthetic split in the official npz layout to a temporary folder, packs it, then
builds every dataset item (same normalisation, TEF, targets, saliency) in a shuffled order,
reading features (a) from the npz files, (b) lazily from the HDF5 file, (c) from the HDF5
file loaded into memory once; then times the feature reads alone (npz vs lazy HDF5),
since building an item (normalisation) is shared by all readers. The page cache is warm
(the files were just written), which favours npz: on a cold disk the gap is larger.
Prints one line per reader and ends with one JSON line.

    python bench/data_loading.py [--recordings 120] [--frames 300] [--passes 2]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from amr.config.schema import DataConfig
from amr.data.annotations import read_annotations
from amr.data.dataset import (
    MomentDataset,
    audio_inputs,
    saliency_labels,
    span_targets,
    text_inputs,
)
from amr.data.features import audio_feature_path, text_feature_path
from amr.data.pack import pack_split


def write_synthetic_split(root: Path, recordings: int, frames: int, per_recording: int = 2):
    rng = np.random.default_rng(0)
    (root / "audio").mkdir()
    (root / "text").mkdir()
    lines = []
    for r in range(recordings):
        vid = f"rec{r:04d}"
        np.savez(audio_feature_path(root / "audio", vid),
                 features=rng.standard_normal((frames, 768)).astype(np.float32))
        for k in range(per_recording):
            qid = f"{vid}_{k}"
            np.savez(text_feature_path(root / "text", qid),
                     last_hidden_state=rng.standard_normal((20, 768)).astype(np.float32))
            start = int(rng.integers(0, frames - 20))
            lines.append(json.dumps({"qid": qid, "query": "a sound", "duration": frames,
                                     "vid": vid, "relevant_windows": [[start, start + 15]]}))
    (root / "ann.jsonl").write_text("\n".join(lines) + "\n")
    return root / "ann.jsonl", root / "audio", root / "text"


def npz_read(query, audio_dir: Path, text_dir: Path, cfg: DataConfig):
    with np.load(audio_feature_path(audio_dir, query.vid)) as npz:
        frames = npz["features"][: cfg.max_audio_frames]
    with np.load(text_feature_path(text_dir, query.qid)) as npz:
        tokens = npz["last_hidden_state"][: cfg.max_text_tokens]
    return frames, tokens


def hdf5_read(dataset: MomentDataset, index: int):
    row = int(dataset.rows[index])
    rec = dataset.recording[row]
    return (dataset._features("audio", dataset.audio_offsets[rec], dataset.audio_offsets[rec + 1]),
            dataset._features("text", dataset.text_offsets[row], dataset.text_offsets[row + 1]))


def npz_item(query, audio_dir: Path, text_dir: Path, cfg: DataConfig) -> dict:
    """The same item as MomentDataset, read straight from the npz files."""
    frames, tokens = npz_read(query, audio_dir, text_dir, cfg)
    windows = np.asarray(query.windows, np.float64)
    n = frames.shape[0]
    return {
        "audio": audio_inputs(frames),
        "text": text_inputs(tokens),
        "spans": span_targets(windows[: cfg.max_windows], n, cfg.clip_length),
        "saliency": saliency_labels(windows, n, cfg.clip_length),
    }


def items_per_second(get_item, count: int, passes: int, seed: int = 0) -> float:
    order = np.random.default_rng(seed).permutation(count)
    get_item(int(order[0]))  # open handles / warm up
    start = time.perf_counter()
    for _ in range(passes):
        for i in order:
            get_item(int(i))
    return passes * count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=120)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = DataConfig()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ann, audio_dir, text_dir = write_synthetic_split(root, args.recordings, args.frames)
        t0 = time.perf_counter()
        pack_split(ann, audio_dir, text_dir, root / "split.h5", cfg)
        pack_s = time.perf_counter() - t0
        queries = read_annotations(ann)
        lazy = MomentDataset(root / "split.h5", cfg, train=True)
        memory = MomentDataset(root / "split.h5", cfg, train=True, in_memory=True)
        n = len(queries)
        npz_rate = items_per_second(lambda i: npz_item(queries[i], audio_dir, text_dir, cfg),
                                    n, args.passes)
        lazy_rate = items_per_second(lazy.__getitem__, n, args.passes)
        memory_rate = items_per_second(memory.__getitem__, n, args.passes)
        npz_read_rate = items_per_second(lambda i: npz_read(queries[i], audio_dir, text_dir, cfg),
                                         n, args.passes)
        hdf5_read_rate = items_per_second(lambda i: hdf5_read(lazy, i), n, args.passes)

    print(f"items: {n} queries over {args.recordings} recordings x {args.frames} frames, "
          f"{args.passes} passes; packing took {pack_s:.2f} s")
    print(f"npz files         {npz_rate:9.1f} items/s")
    print(f"hdf5 (lazy)       {lazy_rate:9.1f} items/s  x{lazy_rate / npz_rate:.2f}")
    print(f"hdf5 (in memory)  {memory_rate:9.1f} items/s  x{memory_rate / npz_rate:.2f}")
    print(f"feature reads only: npz {npz_read_rate:.1f}/s, hdf5 (lazy) {hdf5_read_rate:.1f}/s "
          f"x{hdf5_read_rate / npz_read_rate:.2f}")
    print(json.dumps({
        "items": n,
        "npz_items_per_s": round(npz_rate, 1),
        "hdf5_items_per_s": round(lazy_rate, 1),
        "hdf5_memory_items_per_s": round(memory_rate, 1),
        "speedup": round(lazy_rate / npz_rate, 2),
        "speedup_memory": round(memory_rate / npz_rate, 2),
        "npz_reads_per_s": round(npz_read_rate, 1),
        "hdf5_reads_per_s": round(hdf5_read_rate, 1),
        "pack_s": round(pack_s, 2),
    }))


if __name__ == "__main__":
    main()
