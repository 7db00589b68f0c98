import json
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from amr.config.schema import DataConfig
from amr.data.annotations import DataError
from amr.data.dataset import MomentDataset, collate_moments
from amr.data.pack import pack_split

torch.set_num_threads(1)
CFG = DataConfig()  # the report's settings: 768-d, 32 tokens, 5 windows, 1-s clips
SEVEN_WINDOWS = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 14]]
RECORDS = [
    {"qid": "a_1", "vid": "a", "duration": 10, "relevant_windows": [[2, 5]]},
    {"qid": "b_1", "vid": "b", "duration": 16, "relevant_windows": SEVEN_WINDOWS},
    {"qid": "b_2", "vid": "b", "duration": 16, "relevant_windows": [[7, 7]]},  # no valid window
    {"qid": "a_2", "vid": "a", "duration": 10, "relevant_windows": [[0.5, 1.2], [8, 10]]},
]
FRAMES = {"a": 10, "b": 16}
TOKENS = {"a_1": 4, "b_1": 40, "b_2": 7, "a_2": 5}


def write_and_pack(root, records, frames, tokens, cfg=CFG):
    rng = np.random.default_rng(1)
    (root / "audio").mkdir(parents=True)
    (root / "text").mkdir()
    raw = {}
    for vid, n in frames.items():
        raw[vid] = (3 * rng.standard_normal((n, 768))).astype(np.float32)
        np.savez(root / "audio" / f"{vid}.npz", features=raw[vid])
    for r in records:
        raw[r["qid"]] = rng.standard_normal((tokens[r["qid"]], 768)).astype(np.float32)
        np.savez(root / "text" / f"qid{r['qid']}.npz", last_hidden_state=raw[r["qid"]])
    lines = [json.dumps({"query": f"sound {r['qid']}", **r}) for r in records]
    (root / "ann.jsonl").write_text("\n".join(lines) + "\n")
    out = root / "split.h5"
    pack_split(root / "ann.jsonl", root / "audio", root / "text", out, cfg)
    return out, raw


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return write_and_pack(tmp_path_factory.mktemp("split"), RECORDS, FRAMES, TOKENS)


def test_train_excludes_queries_without_window_eval_keeps_all(split):
    path, _ = split
    assert [it["qid"] for it in MomentDataset(path, CFG, train=True)] == ["a_1", "b_1", "a_2"]
    eval_set = MomentDataset(path, CFG, train=False)
    assert [eval_set[i]["qid"] for i in range(len(eval_set))] == ["a_1", "b_1", "b_2", "a_2"]
    batch = collate_moments([eval_set[2]])
    assert not batch["span_mask"].any() and batch["saliency"].sum() == 0


def test_collate_shapes_masks_tef_and_normalisation(split):
    path, raw = split
    ds = MomentDataset(path, CFG, train=False)
    batch = collate_moments([ds[0], ds[1]])  # a_1 (T=10, 4 tokens), b_1 (T=16, 40 tokens)
    assert set(batch) == {"audio", "audio_mask", "text", "text_mask", "lengths", "spans",
                          "span_mask", "saliency", "saliency_pairs", "saliency_pairs_valid", "qid", "vid",
                          "query", "duration"}
    assert batch["audio"].shape == (2, 16, 770) and batch["audio_mask"].dtype == torch.bool
    assert batch["text"].shape == (2, 32, 768)
    assert batch["lengths"].tolist() == [10, 16]
    assert batch["audio_mask"].sum(1).tolist() == [10, 16]
    assert batch["text_mask"].sum(1).tolist() == [4, 32]
    assert batch["spans"].shape == (2, 5, 2) and batch["span_mask"].sum(1).tolist() == [1, 5]
    assert batch["qid"] == ["a_1", "b_1"] and batch["vid"] == ["a", "b"]
    assert batch["query"] == ["sound a_1", "sound b_1"]
    assert batch["duration"].tolist() == [10.0, 16.0]

    x = raw["a"]
    expected = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(batch["audio"][0, :10, :768].numpy(), expected, rtol=1e-6)
    t = torch.arange(10, dtype=torch.float32)
    torch.testing.assert_close(batch["audio"][0, :10, 768:], torch.stack([t / 10, (t + 1) / 10], 1))
    assert batch["audio"][0, 10:].abs().sum() == 0  # padding stays zero
    tokens = raw["b_1"][:32]
    expected_text = tokens / (np.linalg.norm(tokens, axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(batch["text"][1].numpy(), expected_text, rtol=1e-6)
    assert batch["text"][0, 4:].abs().sum() == 0

    # a_1: [2, 5] s over T = 10 frames -> (c, w) = (0.35, 0.3)
    torch.testing.assert_close(batch["spans"][0, 0], torch.tensor([0.35, 0.3]))
    assert batch["saliency"][0].tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]


def test_saliency_follows_the_first_target_window_as_qd_detrs_loader(split):
    path, _ = split
    eval_set = MomentDataset(path, CFG, train=False)
    # a_1: [2, 5] s -> frames int(2) .. min(int(5), T) - 1 = 2 .. 4
    assert eval_set[0]["saliency"].tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    # a_2: [0.5, 1.2] then [8, 10]: only the first, frames 0 .. int(1.2) - 1 = 0
    assert eval_set[3]["saliency"].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    train = MomentDataset(path, CFG, train=True, seed=5)
    firsts = set()
    for epoch in range(12):  # b_1: 7 windows, 5 targets in random order, labels follow the first
        train.set_epoch(epoch)
        item = train[1]
        first = [round(float(x) * 16) for x in (item["spans"][0, 0] - item["spans"][0, 1] / 2,
                                                  item["spans"][0, 0] + item["spans"][0, 1] / 2)]
        assert item["saliency"].nonzero().flatten().tolist() == list(range(first[0], first[1]))
        firsts.add(tuple(first))
    assert len(firsts) >= 4  # any window may come first, as after QD-DETR's shuffle


def test_saliency_pairs_are_two_inside_and_two_outside_frames_drawn_per_epoch(split):
    path, _ = split
    train = MomentDataset(path, CFG, train=True, seed=5)
    draws = []
    for epoch in range(6):
        train.set_epoch(epoch)
        item = train[0]  # a_1: frames 2-4 inside, 7 outside
        pairs = item["saliency_pairs"].tolist()
        assert item["saliency_pairs_valid"].tolist() == [True, True]
        inside, outside = [p[0] for p in pairs], [p[1] for p in pairs]
        assert set(inside) <= {2, 3, 4} and len(set(inside)) == 2
        assert set(outside) <= {0, 1, 5, 6, 7, 8, 9} and len(set(outside)) == 2
        assert torch.equal(train[0]["saliency_pairs"], item["saliency_pairs"])  # deterministic
        draws.append(tuple(map(tuple, pairs)))
    assert len(set(draws)) > 1  # re-drawn each epoch
    batch = collate_moments([train[0], train[1]])
    assert batch["saliency_pairs"].shape == (2, 2, 2) and batch["saliency_pairs_valid"].all()


def test_saliency_targets_of_one_frame_and_of_a_whole_recording():
    from amr.data.dataset import saliency_targets

    rng = np.random.default_rng(0)
    labels, pairs, valid = saliency_targets([[3.0, 4.0], [5.0, 6.0]], 6, 1.0, rng)
    assert labels.tolist() == [0, 0, 0, 1, 0, 0] and pairs[:, 0].tolist() == [3, 3] and valid.all()
    labels, pairs, valid = saliency_targets([[0.0, 6.0]], 6, 1.0, rng)
    assert labels.tolist() == [1] * 6 and not valid.any()  # no outside frame: no pair counts
    labels, _, valid = saliency_targets([], 6, 1.0, rng)
    assert labels.sum() == 0 and not valid.any()
    # `all`: every frame a window overlaps; no pairs drawn (the loss takes every pair)
    labels, pairs, valid = saliency_targets([[0.5, 1.2], [3.0, 4.0]], 6, 1.0, rng, "all", 0)
    assert labels.tolist() == [1, 1, 0, 1, 0, 0] and pairs.shape == (0, 2) and valid.shape == (0,)


def _sampled(ds, epoch, index=1):
    ds.set_epoch(epoch)
    return ds[index]["spans"]


def test_window_resampling_is_seeded_per_epoch(split):
    path, _ = split
    ds, twin = MomentDataset(path, CFG, train=True, seed=3), MomentDataset(path, CFG, True, 3)
    assert torch.equal(_sampled(ds, 4), _sampled(twin, 4))
    draws = {tuple(_sampled(ds, epoch).flatten().tolist()) for epoch in range(8)}
    assert len(draws) > 1  # a new draw across epochs
    every_window = {((s + e) / 32, (e - s) / 16) for s, e in SEVEN_WINDOWS}  # (c, w), T = 16
    for draw in draws:  # 5 distinct windows of the query each time
        rows = {draw[i: i + 2] for i in range(0, 10, 2)}
        assert len(rows) == 5 and rows <= every_window
    # only queries with > max_windows windows are sampled
    assert torch.equal(_sampled(ds, 1, index=0), _sampled(ds, 2, index=0))


def test_same_batches_with_workers_and_after_pickling(split):
    path, _ = split
    ds = MomentDataset(path, CFG, train=True, seed=7)
    ds.set_epoch(5)
    ds[0]  # opens the HDF5 handle, which must not travel with the pickle
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[1]["spans"], ds[1]["spans"])
    serial = list(DataLoader(ds, batch_size=2, collate_fn=collate_moments))
    parallel = list(DataLoader(ds, batch_size=2, collate_fn=collate_moments, num_workers=2))
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a["spans"], b["spans"]) and torch.equal(a["audio"], b["audio"])


def test_in_memory_matches_lazy(split):
    path, _ = split
    lazy, memory = MomentDataset(path, CFG, False), MomentDataset(path, CFG, False, in_memory=True)
    for i in range(len(lazy)):
        assert torch.equal(lazy[i]["audio"], memory[i]["audio"])
        assert torch.equal(lazy[i]["text"], memory[i]["text"])


def test_blind_split_loads_in_eval_mode_only(tmp_path):
    records = [{"qid": "e_1", "vid": "e", "duration": 8}, {"qid": "e_2", "vid": "e", "duration": 8}]
    path, _ = write_and_pack(tmp_path, records, {"e": 8}, {"e_1": 3, "e_2": 3})
    ds = MomentDataset(path, CFG, train=False)
    batch = collate_moments([ds[0], ds[1]])
    assert batch["spans"].shape == (2, 1, 2) and not batch["span_mask"].any()
    assert batch["saliency"].sum() == 0
    with pytest.raises(DataError, match="no query has a valid window"):
        MomentDataset(path, CFG, train=True)


def test_config_must_match_pack(split, tmp_path):
    path, _ = split
    with pytest.raises(DataError, match="max_text_tokens: packed 32, config 16"):
        MomentDataset(path, DataConfig(max_text_tokens=16), train=True)
    with pytest.raises(DataError, match="amr pack"):
        MomentDataset(tmp_path / "absent.h5", CFG, train=True)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="junk.h5: not a readable HDF5 file"):
        MomentDataset(tmp_path / "junk.h5", CFG, train=True)
