"""Feature extraction from raw audio (amr.extract): the M2D recipe against a stand-in
portable_m2d.py, audio inputs (folders, WebDataset shards), resume and faults."""
from __future__ import annotations

import io
import json
import math
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from amr.extract.audio import cut_windows, decode, window_count
from amr.extract.backends import ExtractError, M2DBackend, TestBackend
from amr.extract.inputs import index_locations, vid_from_bg_path
from amr.extract.run import FAULTS, DatasetInputs, Settings, extract_all

# the interface of nttcslab/m2d examples/portable_m2d.py that the recipe uses (SPEC §2.1); the
# tokenizer pads to max_length so that keeping only attended tokens is tested
FAKE_PORTABLE_M2D = '''
import torch

class _Tokenizer:
    def __call__(self, text, truncation, max_length, return_tensors):
        assert truncation and return_tensors == "pt"
        ids = [101] + [1000 + len(w) for w in text.lower().split()][: max_length - 2] + [102]
        mask = [1] * len(ids) + [0] * (max_length - len(ids))
        ids = ids + [0] * (max_length - len(ids))
        return {"input_ids": torch.tensor([ids]), "attention_mask": torch.tensor([mask])}

class _Bert:
    def __call__(self, input_ids, attention_mask):
        states = input_ids[..., None].float().expand(-1, -1, 768) / 1000
        return (states,)

class _TextEncoder:
    tokenizer = _Tokenizer()
    text_encoder = _Bert()

class PortableM2D:
    def __init__(self, checkpoint_path, flat_features=True):
        assert flat_features
        self.checkpoint_path = checkpoint_path
        self.calls = []
    GET_TEXT
    def eval(self):
        return self
    def to(self, device):
        return self
    def encode_clap_audio(self, waves):
        assert waves.dtype == torch.float32 and waves.shape[1] == 16000, waves.shape
        self.calls.append(waves.shape[0])
        return waves[:, :768] * 0 + waves.abs().mean(dim=1, keepdim=True)
'''
GET_TEXT = '''def get_clap_text_encoder(self):
        self.text_encoder = _TextEncoder()
        return self.text_encoder'''


def write_fake_m2d(root: Path, with_text: bool = True) -> tuple[Path, Path]:
    (root / "examples").mkdir(parents=True)
    code = FAKE_PORTABLE_M2D.replace("GET_TEXT", GET_TEXT if with_text else "")
    (root / "examples" / "portable_m2d.py").write_text(code)
    checkpoint = root / "checkpoint-30.pth"
    checkpoint.write_bytes(b"weights")
    return root, checkpoint


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    y = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([y] * channels, axis=1) if channels > 1 else y


GRID = [(d, r, c) for d in (0.5, 1.0, 1.99) for r in (8000, 16000, 44100, 48000) for c in (1, 2)]
GRID += [(d, r, 1) for d in (60.0, 300.4) for r in (8000, 16000, 44100, 48000)]
GRID += [(300.4, 48000, 2)]


@pytest.mark.parametrize("seconds,rate,channels", GRID)
def test_window_count_follows_the_recipe(tmp_path, seconds, rate, channels):
    path = tmp_path / "a.wav"
    sf.write(path, tone(seconds, rate, channels), rate, subtype="PCM_16")
    samples = decode(path, 16000)
    n = int(round(seconds * rate))
    assert samples.shape == (math.ceil(n * 16000 / rate),)  # librosa's resampled length
    windows = cut_windows(samples, 16000)
    assert windows.shape == (max(1, int(seconds + 1e-9)) if seconds >= 1 else 1, 16000)
    assert windows.shape[0] == window_count(samples.shape[0], 16000)
    if seconds < 1:  # one window, zero-padded after the audio
        assert np.all(windows[0, samples.shape[0]:] == 0)


def test_m2d_backend_recipe_with_a_stand_in(tmp_path):
    repo, checkpoint = write_fake_m2d(tmp_path / "m2d")
    backend = M2DBackend(repo, checkpoint, "cpu", max_text_tokens=32)
    assert "checkpoint-30.pth" in backend.name
    assert backend.checkpoint_sha256 == __import__("hashlib").sha256(b"weights").hexdigest()
    out = backend.encode_audio(np.ones((3, 16000), np.float32))
    assert out.shape == (3, 768) and out.dtype == np.float32
    states = backend.encode_text("a dog barks twice")
    assert states.shape == (6, 768)  # [CLS] 4 words [SEP]; the padding is dropped
    assert np.allclose(states[:, 0], [0.101, 1.001, 1.003, 1.005, 1.005, 0.102])
    assert backend.encode_text(" ".join(["w"] * 50)).shape == (32, 768)  # max_length=32
    with pytest.raises(ExtractError, match="no word piece"):
        backend.encode_text("")


def test_m2d_backend_needs_the_clap_text_encoder(tmp_path):
    repo, checkpoint = write_fake_m2d(tmp_path / "m2d", with_text=False)
    with pytest.raises(ExtractError, match="get_clap_text_encoder"):
        M2DBackend(repo, checkpoint, "cpu")
    with pytest.raises(ExtractError, match="checkpoint not found"):
        M2DBackend(repo, tmp_path / "missing.pth", "cpu")


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone(seconds, rate), rate, format="WAV")
    return buffer.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, samples: list[tuple[str, bytes | None, dict | None]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, wav, meta in samples:
            if wav is not None:
                add_member(tar, f"{key}.wav", wav)
            if meta is not None:
                add_member(tar, f"{key}.json", json.dumps(meta).encode())


def test_shards_map_vids_from_bg_path_and_list_faults(tmp_path):
    assert vid_from_bg_path("/data/bg/Amsterdam/0.0_60.0.wav") == "Amsterdam_0.0_60.0"
    write_shard(tmp_path / "train" / "shard-000.tar", [
        ("000001", wav_bytes(3), {"bg": {"path": "x/bg/Amsterdam/0.0_60.0.wav"}, "fg": []}),
        ("000002", wav_bytes(2), None),
        ("000003", wav_bytes(2), {"fg": []}),
        ("000004", None, {"bg": {"path": "x/bg/Oslo/0.0_60.0.wav"}}),
    ])
    faults = {k: [] for k in FAULTS}
    refs = index_locations([tmp_path / "train"], faults)
    assert list(refs) == ["Amsterdam_0.0_60.0"]
    ref = refs["Amsterdam_0.0_60.0"]
    assert ref.member == "000001.wav" and decode(ref.read(), 16000, ref.name).shape == (48000,)
    assert [f["file"].rsplit(":", 1)[1] for f in faults["tar_sample_without_json"]] == ["000002.wav"]
    assert len(faults["tar_json_without_bg_path"]) == 1
    assert len(faults["tar_sample_without_audio"]) == 1


def annotation(path: Path, rows: list[tuple[str, str, int, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"qid": qid, "query": text, "vid": vid, "duration": d,
                                        "relevant_windows": [[0, 1]]}) + "\n"
                            for qid, vid, d, text in rows))
    return path


@pytest.fixture
def dataset(tmp_path):
    """A CASTELLA-like folder (wav 44.1 kHz stereo, flac, ogg) and a Clotho-Moment shard."""
    audio = tmp_path / "castella"
    audio.mkdir()
    sf.write(audio / "a.wav", tone(7.5, 44100, 2), 44100)
    sf.write(audio / "b.flac", tone(3.2, 22050), 22050)
    sf.write(audio / "c.ogg", tone(4.0, 48000), 48000)
    cas = annotation(tmp_path / "cas.jsonl", [("a_1", "a", 7, "a dog barks"),
                                              ("a_2", "a", 7, "rain on a roof"),
                                              ("b_1", "b", 3, "a bell rings"),
                                              ("c_1", "c", 4, "wind")])
    write_shard(tmp_path / "clotho" / "s0.tar", [
        ("k1", wav_bytes(5), {"bg": {"path": "bg/Paris/0.0_60.0.wav"}})])
    clotho = annotation(tmp_path / "clotho.jsonl", [("17", "Paris_0.0_60.0", 5, "birds sing")])
    return [DatasetInputs("finetune", [cas], [audio]),
            DatasetInputs("pretrain", [clotho], [tmp_path / "clotho"])]


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*.npz"))}


def test_folders_and_shards_give_the_official_layout(tmp_path, dataset):
    reports = extract_all(dataset, tmp_path / "out", TestBackend(), "test",
                          Settings(batch_size=4, workers=2, progress=False))
    files = files_of(tmp_path / "out")
    assert sorted(files) == ["finetune/audio/a.npz", "finetune/audio/b.npz", "finetune/audio/c.npz",
                             "finetune/text/qida_1.npz", "finetune/text/qida_2.npz",
                             "finetune/text/qidb_1.npz", "finetune/text/qidc_1.npz",
                             "pretrain/audio/Paris_0.0_60.0.npz", "pretrain/text/qid17.npz"]
    shapes = {vid: np.load(tmp_path / "out" / "finetune" / "audio" / f"{vid}.npz")["features"].shape
              for vid in "abc"}
    assert shapes == {"a": (7, 768), "b": (3, 768), "c": (4, 768)}
    assert all(sum(r["fault_counts"].values()) == 0 for r in reports)
    assert reports[0]["counts"]["windows"] == 14
    record = json.loads((tmp_path / "out" / "extractor.json").read_text())
    assert record["backend"] == "test" and record["sample_rate"] == 16000


class Interrupted(Exception):
    pass


class StopsAfter(TestBackend):
    """Dies in the middle of the audio, like a killed run."""

    def __init__(self, batches: int):
        super().__init__()
        self.left = batches + 1  # + the width probe

    def encode_audio(self, waves):
        self.left -= 1
        if self.left < 0:
            raise Interrupted
        return super().encode_audio(waves)


def test_resumed_run_writes_the_same_bytes(tmp_path, dataset):
    settings = Settings(batch_size=3, workers=0, progress=False)
    extract_all(dataset, tmp_path / "whole", TestBackend(), "test", settings)
    with pytest.raises(Interrupted):
        extract_all(dataset, tmp_path / "resumed", StopsAfter(3), "test", settings)
    partial = files_of(tmp_path / "resumed")
    assert 0 < sum(k.startswith("finetune/audio") for k in partial) < 3
    (tmp_path / "resumed" / "finetune" / "audio" / ".c.npz.123.abcd.tmp").write_bytes(b"torn")
    reports = extract_all(dataset, tmp_path / "resumed", TestBackend(), "test", settings)
    assert files_of(tmp_path / "resumed") == files_of(tmp_path / "whole")
    assert reports[0]["counts"]["recordings_kept"] == sum(
        k.startswith("finetune/audio") for k in partial)
    assert not list((tmp_path / "resumed").rglob("*.tmp"))


@pytest.mark.parametrize("fault", ["audio_unreadable", "audio_empty", "audio_missing",
                                   "text_empty", "tar_sample_without_json"])
def test_faults_fail_strict_and_are_listed_otherwise(tmp_path, dataset, fault):
    audio = tmp_path / "castella"
    if fault == "audio_unreadable":
        (audio / "b.flac").unlink()
        (audio / "b.wav").write_bytes(b"RIFF not really")
        named = "b.wav"
    elif fault == "audio_empty":
        sf.write(audio / "c.ogg", np.zeros(0, np.float32), 48000)
        named = "c.ogg"
    elif fault == "audio_missing":
        (audio / "a.wav").unlink()
        named = "'a'"
    elif fault == "text_empty":
        annotation(tmp_path / "cas.jsonl", [("a_1", "a", 7, "?!"), ("b_1", "b", 3, "bell"),
                                            ("c_1", "c", 4, "wind")])
        named = "cas.jsonl: qid a_1"
    else:
        write_shard(tmp_path / "clotho" / "s1.tar", [("k9", wav_bytes(2), None)])
        named = "s1.tar:k9.wav"
    with pytest.raises(ExtractError, match=f"{named}.*{fault}"):
        extract_all(dataset, tmp_path / "strict", TestBackend(), "test",
                    Settings(workers=0, progress=False, strict=True))
    reports = extract_all(dataset, tmp_path / "lenient", TestBackend(), "test",
                          Settings(workers=0, progress=False, strict=False))
    listed = {k: v for r in reports for k, v in r["fault_counts"].items() if v}
    assert listed == {fault: 1}
    on_disk = json.loads((tmp_path / "lenient" / f"{reports[0]['dataset']}.report.json").read_text())
    assert on_disk["faults"] == reports[0]["faults"]


def test_plugin_backend_from_module_factory(tmp_path, dataset):
    from amr.config.schema import ExtractSource, PluginBackendConfig
    from amr.extract.backends import make_backend

    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "my_extractor.py").write_text(textwrap.dedent('''
        from amr.extract.backends import TestBackend

        def build(device, max_text_tokens):
            backend = TestBackend(16, 8, max_text_tokens)
            backend.name = f"mine on {device}"
            return backend
    '''))
    (tmp_path / "w.bin").write_bytes(b"w")
    cfg = ExtractSource(backend="plugin", plugin=PluginBackendConfig(
        "my_extractor:build", str(tmp_path / "plug"), str(tmp_path / "w.bin")))
    backend = make_backend(cfg, "cpu", 768, 768, 32)
    assert backend.name == "mine on cpu" and len(backend.checkpoint_sha256) == 64
    extract_all(dataset[:1], tmp_path / "out", backend, "plugin",
                Settings(workers=0, progress=False))
    assert np.load(tmp_path / "out" / "finetune" / "audio" / "a.npz")["features"].shape == (7, 16)
    with pytest.raises(ExtractError, match="module:callable"):
        make_backend(ExtractSource(backend="plugin"), "cpu", 768, 768, 32)
