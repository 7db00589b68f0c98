"""Extraction throughput on CPU with the deterministic test backend: everything around the
model (decoding, resampling, windowing, batching, atomic npz writes) at full speed.

Writes synthetic one-minute recordings (44.1 kHz stereo wav, as much audio needs resampling)
to a temporary folder and extracts them with ``workers`` decoding processes, then times the
stages alone: decode + resample per second of audio, the test backend per window. What bounds
the run is the slower of decoding (spread over the workers) and the encoder in the main
process; with M2D-CLAP on a GPU the encoder is the model instead of the test backend's
statistics. ``--librosa`` also compares the decoder's output with ``librosa.load(path,
sr=16000)`` (needs librosa installed; not a dependency). Ends with one JSON line.

    python bench/extract_speed.py [--recordings 24] [--seconds 60] [--workers 2] [--librosa]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from amr.extract.audio import cut_windows, decode
from amr.extract.backends import TestBackend
from amr.extract.run import DatasetInputs, Settings, extract_all


def write_recordings(folder: Path, count: int, seconds: float, rate: int = 44100) -> Path:
    rng = np.random.default_rng(0)
    audio = folder / "audio"
    audio.mkdir(parents=True)
    rows = []
    for i in range(count):
        t = np.arange(int(seconds * rate)) / rate
        y = 0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.05 * rng.standard_normal(t.shape)
        sf.write(audio / f"rec{i:04d}.wav", np.stack([y, 0.5 * y], 1).astype(np.float32), rate,
                 subtype="PCM_16")
        rows.append({"qid": f"rec{i:04d}_1", "query": f"a tone number {i}", "vid": f"rec{i:04d}",
                     "duration": int(seconds), "relevant_windows": [[0, 1]]})
    (folder / "ann.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return audio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--recordings", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--librosa", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        audio = write_recordings(tmp, args.recordings, args.seconds)
        inputs = [DatasetInputs("finetune", [tmp / "ann.jsonl"], [audio])]
        backend = TestBackend()
        start = time.perf_counter()
        report = extract_all(inputs, tmp / "out", backend, "test",
                             Settings(batch_size=args.batch_size, workers=args.workers,
                                      progress=False))[0]
        total_s = time.perf_counter() - start
        windows = report["counts"]["windows"]

        files = sorted(audio.glob("*.wav"))[:4]
        start = time.perf_counter()
        decoded = [decode(f, 16000) for f in files]
        decode_s = (time.perf_counter() - start) / (len(files) * args.seconds)
        batch = np.concatenate([cut_windows(d, 16000) for d in decoded])
        start = time.perf_counter()
        backend.encode_audio(batch)
        encode_s = (time.perf_counter() - start) / batch.shape[0]

        librosa_diff = None
        if args.librosa:
            import librosa

            reference = librosa.load(files[0], sr=16000)[0]
            librosa_diff = float(np.abs(reference - decoded[0]).max()) \
                if reference.shape == decoded[0].shape else f"shape {reference.shape}"

    end_to_end = windows / total_s
    decode_rate = args.workers and args.workers / decode_s or 1 / decode_s
    print(f"end to end: {windows} windows in {total_s:.2f} s = {end_to_end:,.0f} windows/s "
          f"({args.workers} decoding workers, batch {args.batch_size})")
    print(f"decode + resample 44.1 kHz stereo -> 16 kHz mono: {1 / decode_s:,.0f} s of audio/s "
          f"per process (~{decode_rate:,.0f} windows/s with {max(args.workers, 1)})")
    print(f"test backend: {1 / encode_s:,.0f} windows/s in the main process")
    if librosa_diff is not None:
        print(f"max |decode - librosa.load(sr=16000)|: {librosa_diff}")
    print(json.dumps({
        "windows": windows,
        "windows_per_s": round(end_to_end, 1),
        "decode_audio_s_per_s": round(1 / decode_s, 1),
        "test_backend_windows_per_s": round(1 / encode_s, 1),
        "workers": args.workers,
        "librosa_max_abs_diff": librosa_diff,
    }))


if __name__ == "__main__":
    main()
