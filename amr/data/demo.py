"""Offline demo data: a small synthetic dataset in the official layout, grounded in its text.

``make_demo_dataset(out, seed)`` writes, deterministically from ``seed`` (byte-identical files)::

    OUT/manifest.json                       seed, sizes, counts, planted data faults
    OUT/clotho_moment/{train,val}.jsonl     pre-training set: 60-s recordings, one query each,
                                            one float window per query, extra key ``fg_dB``
    OUT/clotho_moment/audio/{vid}.npz       key ``features``, float32 (T, 768)
    OUT/clotho_moment/text/qid{qid}.npz     key ``last_hidden_state``, float32 (n_tokens, 768)
    OUT/castella/{train,val,test}.jsonl     60-300 s recordings, 1-5 queries each, 1-many
                                            integer windows per query, short and long moments
    OUT/castella/{audio,text}/...           as above (the three splits share one feature dir)
    OUT/evaluation/queries.jsonl            blind list: ``qid, query, duration, vid`` only
    OUT/evaluation/{audio,text}/...         as above

Identifiers follow the real data: Clotho-like qids are numeric strings and vids look like
``Lisbon_12.0_72.0``; CASTELLA-like vids are 11-character video ids and qids ``<vid>_<k>``;
evaluation qids ``dcase2026_evaluation_q001`` with vids ``dcase2026_evaluation_audio_001``.
Durations are whole seconds. CASTELLA-like durations are ``min + (max - min) * u ** skew``
(u uniform): real recordings are mostly long, but short ones keep demo training cheap on CPU.

How the data is grounded (why a detector must read the query):

- every word has a fixed random 768-d vector (a hash of the word and the seed, so unknown words
  of a real annotation file get vectors too);
- a hidden random matrix maps the mean vector of a query's content words (function words and
  fillers such as "the", "in the background" are ignored) to an event signature in audio space;
- a recording is a smoothly drifting background plus per-frame noise, plus each query's
  signature inside its windows (onset/offset ramps, per-occurrence gain), plus distractor events
  of other types elsewhere. Recordings hold several events and event types share words
  ("a man speaks" / "a woman speaks"), so the audio alone does not say which event is wanted;
- text token states are the word vectors (plus [CLS]/[SEP] tokens) with a little noise and
  context mixing, so their length follows the query.

Data faults of the real release (SPEC §1) are planted on purpose and listed in the manifest
under the names :mod:`amr.data.pack` reports them with (one entry per window or recording):
``window_longer_than_max_gt_length`` (one bogus window ``[duration, 4800]`` in CASTELLA-like
train), ``window_end_past_duration`` (ends past the duration by 1-2 s, plus the bogus window)
and ``recording_length_differs_from_duration`` (frame count T = ``duration ± 1``).

``synthesise_features(annotations, audio_dir, text_dir, seed)`` instead writes grounded features
for a given annotation file: one audio file per vid (T = duration) with each query's event at its
windows, and one text file per qid. Queries without windows (a blind list) get their event at one
hidden random window so that the features stay answerable. With the same seed, both functions use
the same words-to-audio mapping, so a model pre-trained on one transfers to the other.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import shutil
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from amr.config.schema import DemoSizes

FEATURE_DIM = 768  # audio frame width (M2D-CLAP)
TEXT_DIM = 768  # text token-state width (BERT)
BOGUS_WINDOW_END = 4800  # the real release holds [299, 4800]
MANIFEST_NAME = "manifest.json"
DATASET_DIRS = ("clotho_moment", "castella", "evaluation")


# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------
# Event types as their content words. Shared words ("man", "car", "water") make near misses.
EVENT_TYPES: tuple[tuple[str, ...], ...] = (
    ("dog", "barks"), ("dog", "growls"), ("cat", "meows"), ("birds", "chirp"),
    ("rooster", "crows"), ("cow", "moos"), ("man", "speaks"), ("man", "laughs"),
    ("man", "coughs"), ("woman", "speaks"), ("woman", "sings"), ("baby", "cries"),
    ("crowd", "cheers"), ("people", "clap"), ("car", "engine", "starts"), ("car", "horn", "honks"),
    ("car", "passes"), ("train", "horn", "blows"), ("train", "rumbles"), ("airplane", "flies"),
    ("siren", "wails"), ("door", "slams"), ("door", "creaks"), ("phone", "rings"),
    ("bell", "rings"), ("clock", "ticks"), ("water", "runs"), ("water", "drips"),
    ("rain", "falls"), ("thunder", "rumbles"), ("wind", "blows"), ("fire", "crackles"),
    ("music", "plays"), ("guitar", "strums"), ("piano", "plays"), ("keyboard", "clicks"),
    ("footsteps", "approach"), ("glass", "shatters"), ("hammer", "knocks"), ("saw", "cuts"),
)
_PLURAL_SUBJECTS = {"birds", "people", "footsteps"}
_PREFIXES = ("", "", "", "suddenly", "then", "meanwhile")
_FILLERS = (
    "", "", "", "in the background", "nearby", "in the distance", "repeatedly", "loudly",
    "softly", "again and again", "for a while", "several times",
)
# Ignored by the words-to-audio mapping: articles, auxiliaries, prepositions and the fillers.
FUNCTION_WORDS = frozenset(
    """a an the is are was were be been being am it its this that these those there here
    and or but as while when then of to in on at by for from with into onto over under
    up down off out about after before during some someone something somebody
    suddenly meanwhile background nearby distance repeatedly loudly softly again
    while several times s""".split()
)
_SPECIAL_TOKENS = ("[CLS]", "[SEP]")
_CITIES = ("Lisbon", "Kyoto", "Singapore", "Oslo", "Lima", "Dakar", "Hanoi", "Quito")
_VID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# Audio composition (norms of the parts of one frame before the model's L2 normalisation).
_BACKGROUND_NORM = 1.0
_DRIFT_NORM = 0.5  # slow drift of the background along a few directions
_NOISE_NORM = 0.35  # independent per-frame noise
_GAIN_RANGE = (0.6, 1.2)  # event signature norm, drawn per occurrence
_TEXT_NOISE_NORM = 0.15
_TEXT_CONTEXT_MIX = 0.1  # each token state leans a little toward the sentence mean

_WORD_RE = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased words; punctuation splits words ("don't" -> "don", "t")."""
    return _WORD_RE.findall(text.lower())


def content_words(words: list[str]) -> list[str]:
    """The words that decide the event; all words when a query has no content word."""
    kept = [w for w in words if w not in FUNCTION_WORDS]
    return kept or list(words)


# ---------------------------------------------------------------------------------------------
# Seeded randomness: every random object is keyed by names, so order of generation never matters
# ---------------------------------------------------------------------------------------------
def _stable_int(*parts: object) -> int:
    blob = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little")


def _rng(seed: int, *parts: object) -> np.random.Generator:
    return np.random.default_rng([seed, _stable_int(*parts)])


@lru_cache(maxsize=8192)
def _word_vector(seed: int, word: str) -> np.ndarray:
    vec = _rng(seed, "word", word).standard_normal(TEXT_DIM) / math.sqrt(TEXT_DIM)
    vec.setflags(write=False)
    return vec


@lru_cache(maxsize=4)
def _hidden_mapping(seed: int) -> np.ndarray:
    """Random (FEATURE_DIM, TEXT_DIM) matrix; near-isometric, so similar texts sound similar."""
    rng = _rng(seed, "words-to-audio mapping")
    mapping = rng.standard_normal((FEATURE_DIM, TEXT_DIM)) / math.sqrt(FEATURE_DIM)
    mapping.setflags(write=False)
    return mapping


def _query_signature(seed: int, text: str) -> np.ndarray:
    """Unit-norm audio-space signature of the event a query describes."""
    return _signature_of_words(seed, tuple(content_words(tokenize(text)) or ["[UNK]"]))


@lru_cache(maxsize=4096)
def _signature_of_words(seed: int, words: tuple[str, ...]) -> np.ndarray:
    mean = np.mean([_word_vector(seed, w) for w in words], axis=0)
    signature = _hidden_mapping(seed) @ mean
    signature /= np.linalg.norm(signature)
    signature.setflags(write=False)
    return signature


def _token_states(seed: int, text: str, rng: np.random.Generator) -> np.ndarray:
    words = [_SPECIAL_TOKENS[0], *(tokenize(text) or ["[UNK]"]), _SPECIAL_TOKENS[1]]
    vectors = np.stack([_word_vector(seed, w) for w in words])
    states = (1.0 - _TEXT_CONTEXT_MIX) * vectors + _TEXT_CONTEXT_MIX * vectors.mean(axis=0)
    states += rng.standard_normal(states.shape) * (_TEXT_NOISE_NORM / math.sqrt(TEXT_DIM))
    return states.astype(np.float32)


def _query_text(event: tuple[str, ...], rng: np.random.Generator) -> str:
    words = list(event)
    if words[0] not in _PLURAL_SUBJECTS:
        words.insert(0, str(rng.choice(("a", "the", "a"))))
    prefix, filler = str(rng.choice(_PREFIXES)), str(rng.choice(_FILLERS))
    text = " ".join(w for w in (prefix, " ".join(words), filler) if w)
    return text[0].upper() + text[1:]


# ---------------------------------------------------------------------------------------------
# Audio rendering
# ---------------------------------------------------------------------------------------------
@dataclass
class _Event:
    signature: np.ndarray  # unit norm, (FEATURE_DIM,)
    windows: list[tuple[float, float]]  # seconds, where the event sounds (already clipped)


def _envelope(n_frames: int, start: float, end: float, rng: np.random.Generator) -> np.ndarray:
    """Per-frame loudness of one occurrence: overlap with [start, end) and short ramps."""
    t = np.arange(n_frames, dtype=np.float64)
    overlap = np.clip(np.minimum(t + 1.0, end) - np.maximum(t, start), 0.0, 1.0)
    ramp = min(2.0, 0.25 * (end - start))
    if ramp > 0.5:
        centre = t + 0.5
        shape = np.minimum((centre - start) / ramp + 0.5, (end - centre) / ramp + 0.5)
        overlap *= np.clip(shape, 0.3, 1.0)
    period, phase = rng.uniform(4.0, 20.0), rng.uniform(0, 2 * np.pi)
    wobble = 1.0 + 0.15 * np.sin(2 * np.pi * t / period + phase)
    return overlap * wobble * rng.uniform(*_GAIN_RANGE)


def _render_audio(n_frames: int, events: list[_Event], rng: np.random.Generator) -> np.ndarray:
    d = FEATURE_DIM
    base = rng.standard_normal(d) * (_BACKGROUND_NORM / math.sqrt(d))
    directions = rng.standard_normal((3, d)) * (_DRIFT_NORM / math.sqrt(3 * d))
    t = np.arange(n_frames)[:, None] / max(n_frames, 1)
    periods = rng.uniform(0.3, 2.0, size=3)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    drift = np.sin(2 * np.pi * t / periods + phases) @ directions
    frames = rng.standard_normal((n_frames, d), dtype=np.float32)
    frames *= np.float32(_NOISE_NORM / math.sqrt(d))
    frames += (base + drift).astype(np.float32)
    for event in events:
        for start, end in event.windows:
            env = _envelope(n_frames, start, end, rng)
            active = env > 0
            frames[active] += (env[active, None] * event.signature).astype(np.float32)
    return frames


# ---------------------------------------------------------------------------------------------
# Files: npz written with fixed zip timestamps so that equal arrays give equal bytes
# ---------------------------------------------------------------------------------------------
def write_npz(path: Path, key: str, array: np.ndarray) -> None:
    """One-array ``.npz`` readable by ``np.load``; byte-identical for identical arrays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open(info, "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, np.ascontiguousarray(array), allow_pickle=False)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------------------------
# Recording layouts
# ---------------------------------------------------------------------------------------------
class _Timeline:
    """Free seconds of one recording; events are placed without overlapping each other."""

    def __init__(self, duration: int, rng: np.random.Generator):
        self.busy = np.zeros(duration, dtype=bool)
        self.rng = rng

    def place(
        self, length: float, at_end: bool = False, whole_seconds: bool = False
    ) -> tuple[float, float] | None:
        n = len(self.busy)
        length = float(min(length, n - 2))
        for _ in range(8):
            if whole_seconds:
                length = float(max(1, round(length)))
            if at_end:
                start = n - length
            elif whole_seconds:
                start = float(self.rng.integers(0, int(n - length) + 1))
            else:
                start = self.rng.uniform(0.0, n - length)
            lo, hi = max(0, int(start) - 1), min(n, int(math.ceil(start + length)) + 1)
            if not self.busy[lo:hi].any():  # 1-s gap keeps neighbouring events apart
                self.busy[int(start):int(math.ceil(start + length))] = True
                return start, start + length
            length = max(1.0, length * 0.7)
        return None


def _castella_length(duration: int, rng: np.random.Generator) -> int:
    """Moment length in whole seconds: mostly short, some medium, a few long (like CASTELLA)."""
    u = rng.uniform()
    if u < 0.6:
        length = math.exp(rng.uniform(0.0, math.log(8.0)))
    elif u < 0.92:
        length = math.exp(rng.uniform(math.log(8.0), math.log(30.0)))
    else:
        length = rng.uniform(30.0, max(31.0, 0.5 * duration))
    return max(1, int(round(length)))


def _window_count(rng: np.random.Generator) -> int:
    return int(rng.choice([1, 2, 3, 4, 5, 6, 8], p=[0.5, 0.2, 0.12, 0.08, 0.05, 0.03, 0.02]))


def _queries_per_recording(rng: np.random.Generator, limit: int) -> int:
    p = np.array([0.25, 0.3, 0.25, 0.13, 0.07])[:limit]
    return int(rng.choice(np.arange(1, limit + 1), p=p / p.sum()))


def _pick_event_types(rng: np.random.Generator, count: int, avoid_words: set[str] = frozenset(),
                      types: int = 0):
    pool = EVENT_TYPES[:types] if types else EVENT_TYPES
    allowed = [i for i, e in enumerate(pool) if not avoid_words.intersection(e)]
    chosen = rng.choice(allowed, size=min(count, len(allowed)), replace=False)
    return [EVENT_TYPES[i] for i in chosen]


def _youtube_like_id(rng: np.random.Generator) -> str:
    return "".join(_VID_ALPHABET[i] for i in rng.integers(0, len(_VID_ALPHABET), size=11))


def _walking_tour_id(rng: np.random.Generator, duration: int) -> str:
    offset = float(rng.integers(0, 6000))
    return f"{_CITIES[int(rng.integers(len(_CITIES)))]}_{offset:.1f}_{offset + duration:.1f}"


def _unused_name(draw, used: set[str]) -> str:
    """Draw names until one is new (keeps vids unique across the splits sharing a feature dir)."""
    name = draw()
    while name in used:
        name = draw()
    used.add(name)
    return name


@dataclass
class _Split:
    name: str  # e.g. "castella/train"
    records: list[dict]
    faults: dict[str, list[str]]


def _split_query_counts(total: int, rng: np.random.Generator, limit: int) -> list[int]:
    counts: list[int] = []
    while sum(counts) < total:
        counts.append(min(_queries_per_recording(rng, limit), total - sum(counts)))
    return counts


def _castella_recording(
    seed: int, rng: np.random.Generator, duration: int, n_queries: int, overrun: bool, types: int
) -> tuple[list[_Event], list[dict]]:
    """Events of one recording and its queries (text, written windows, whether one overruns).

    Each query is a distinct event type with 1-many non-overlapping whole-second windows; one to
    three distractor types that share no word with the queries sound elsewhere. With ``overrun``
    the first query's first moment lasts to the end and its written end is 1-2 s past it.
    """
    timeline = _Timeline(duration, rng)
    events: list[_Event] = []
    queries = []
    query_types = _pick_event_types(rng, n_queries, types=types)
    for k, event_type in enumerate(query_types):
        text = _query_text(event_type, rng)
        windows: list[tuple[float, float]] = []
        for w in range(_window_count(rng)):
            at_end = overrun and k == 0 and w == 0
            placed = timeline.place(_castella_length(duration, rng), at_end, whole_seconds=True)
            if placed is not None:
                windows.append(placed)
        if not windows:  # a crowded recording: squeeze in a one-second moment
            free = np.flatnonzero(~timeline.busy)
            start = float(free[rng.integers(len(free))]) if len(free) else 0.0
            timeline.busy[int(start)] = True
            windows.append((start, start + 1.0))
        windows.sort()
        events.append(_Event(_query_signature(seed, text), windows))
        written = [[int(s), int(e)] for s, e in windows]
        if overrun and k == 0 and written[-1][1] == duration:
            written[-1][1] = duration + int(rng.choice((1, 2)))
        queries.append({"text": text, "windows": written, "overrun": written[-1][1] > duration})

    used_words = {w for e in query_types for w in e}
    for event_type in _pick_event_types(rng, int(rng.integers(1, 4)), used_words, types):
        lengths = [_castella_length(duration, rng) for _ in range(int(rng.integers(1, 4)))]
        placed = [timeline.place(length, whole_seconds=True) for length in lengths]
        text = _query_text(event_type, rng)
        events.append(_Event(_query_signature(seed, text), [p for p in placed if p is not None]))
    return events, queries


def _make_castella_split(
    out: Path, seed: int, sizes: DemoSizes, split: str, used_vids: set[str], blind: bool = False
) -> _Split:
    """CASTELLA-like recordings (or the blind evaluation list when ``blind``)."""
    name = "evaluation" if blind else f"castella/{split}"
    rng = _rng(seed, "layout", name)
    total = sizes.evaluation_queries if blind else getattr(sizes, f"castella_{split}_queries")
    counts = _split_query_counts(total, rng, sizes.max_queries_per_recording)
    n_rec = len(counts)

    def chosen(k: int) -> set[int]:
        if n_rec == 0:
            return set()
        return set(rng.choice(n_rec, size=min(k, n_rec), replace=False).tolist())

    overrun_recs = set() if blind else chosen(sizes.end_overruns_per_split)
    mismatch_recs = chosen(sizes.frame_mismatches_per_split)
    bogus_recs = chosen(sizes.bogus_windows) if split == "train" and not blind else set()
    faults = {"window_end_past_duration": [], "recording_length_differs_from_duration": []}
    if not blind:
        faults["window_longer_than_max_gt_length"] = []

    dataset_dir = out / ("evaluation" if blind else "castella")
    records: list[dict] = []
    span = sizes.castella_max_duration - sizes.castella_min_duration
    for r, n_queries in enumerate(counts):
        if blind:
            vid = f"dcase2026_evaluation_audio_{r + 1:03d}"
        else:
            vid = _unused_name(lambda: _youtube_like_id(rng), used_vids)
        skewed = rng.uniform() ** sizes.duration_skew
        duration = sizes.castella_min_duration + int(round(span * skewed))
        n_frames = duration
        if r in mismatch_recs:
            n_frames = duration + int(rng.choice((-1, 1)))
            faults["recording_length_differs_from_duration"].append(vid)

        events, rec_records = _castella_recording(seed, rng, duration, n_queries,
                                                  overrun=r in overrun_recs, types=sizes.event_types)
        audio = _render_audio(n_frames, events, _rng(seed, "audio", vid))
        write_npz(dataset_dir / "audio" / f"{vid}.npz", "features", audio)

        for k, rec in enumerate(rec_records, start=1):
            qid = f"dcase2026_evaluation_q{len(records) + 1:03d}" if blind else f"{vid}_{k}"
            record = {"qid": qid, "query": rec["text"], "duration": duration, "vid": vid}
            if not blind:
                windows = rec["windows"]
                if r in bogus_recs and k == 1:
                    windows.insert(len(windows) // 2 + 1, [duration, BOGUS_WINDOW_END])
                    faults["window_longer_than_max_gt_length"].append(qid)
                    faults["window_end_past_duration"].append(qid)  # its end is past it too
                if rec["overrun"]:
                    faults["window_end_past_duration"].append(qid)
                record["relevant_windows"] = windows
            text_states = _token_states(seed, rec["text"], _rng(seed, "text", qid))
            write_npz(dataset_dir / "text" / f"qid{qid}.npz", "last_hidden_state", text_states)
            records.append(record)
    if blind:
        del faults["window_end_past_duration"]
    return _Split(name, records, faults)


def _make_clotho_split(
    out: Path, seed: int, sizes: DemoSizes, split: str, first_qid: int, used_vids: set[str]
) -> _Split:
    """Clotho-Moment-like: one foreground event per 60-s recording, float window, fg_dB."""
    name = f"clotho_moment/{split}"
    rng = _rng(seed, "layout", name)
    duration = sizes.clotho_duration
    records = []
    for i in range(getattr(sizes, f"clotho_{split}_queries")):
        qid = str(first_qid + i)
        vid = _unused_name(lambda: _walking_tour_id(rng, duration), used_vids)
        timeline = _Timeline(duration, rng)
        event_type = _pick_event_types(rng, 1, types=sizes.event_types)[0]
        text = _query_text(event_type, rng)
        length = round(float(rng.uniform(1.0, 0.5 * duration)), 1)
        start, _ = timeline.place(length)
        start = round(start, 1)
        window = [start, round(start + length, 1)]
        events = [_Event(_query_signature(seed, text), [tuple(window)])]
        for other in _pick_event_types(rng, int(rng.integers(0, 3)), set(event_type), sizes.event_types):
            placed = timeline.place(float(rng.uniform(2.0, 10.0)))
            if placed is not None:
                events.append(_Event(_query_signature(seed, _query_text(other, rng)), [placed]))
        event_rng = _rng(seed, "audio", vid, qid)
        write_npz(out / "clotho_moment" / "audio" / f"{vid}.npz", "features",
                  _render_audio(duration, events, event_rng))
        write_npz(out / "clotho_moment" / "text" / f"qid{qid}.npz", "last_hidden_state",
                  _token_states(seed, text, _rng(seed, "text", qid)))
        records.append({"qid": qid, "query": text, "duration": duration, "vid": vid,
                        "relevant_windows": [window], "fg_dB": round(float(rng.uniform(-6, 6)), 4)})
    return _Split(name, records, {})


def _prepare_out(out: Path) -> None:
    """Refuse to mix demo files into a foreign directory; replace a previous demo dataset."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a directory; choose another OUT")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST_NAME).is_file():
            raise FileExistsError(
                f"{out}: directory is not empty and holds no demo {MANIFEST_NAME}; "
                "choose an empty or new OUT directory"
            )
        for name in DATASET_DIRS:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        (out / MANIFEST_NAME).unlink()
    out.mkdir(parents=True, exist_ok=True)


def make_demo_dataset(out: str | Path, seed: int = 0, sizes: DemoSizes = DemoSizes()) -> dict:
    """Write the demo dataset under ``out`` (layout: module docstring); return the manifest."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    sizes.validate()
    out = Path(out)
    _prepare_out(out)

    clotho_vids: set[str] = set()
    splits = [
        _make_clotho_split(out, seed, sizes, "train", 10000, clotho_vids),
        _make_clotho_split(
            out, seed, sizes, "val", 10000 + sizes.clotho_train_queries, clotho_vids
        ),
    ]
    used_vids: set[str] = set()
    for split in ("train", "val", "test"):
        splits.append(_make_castella_split(out, seed, sizes, split, used_vids))
    splits.append(_make_castella_split(out, seed, sizes, "evaluation", used_vids, blind=True))

    manifest: dict = {"seed": seed, "sizes": dataclasses.asdict(sizes), "splits": {}, "faults": {}}
    for split in splits:
        dataset = split.name.split("/")[0]
        if dataset == "evaluation":
            file_name = "queries.jsonl"
        else:
            file_name = f"{split.name.split('/')[1]}.jsonl"
        _write_jsonl(out / dataset / file_name, split.records)
        manifest["splits"][split.name] = {
            "annotations": f"{dataset}/{file_name}",
            "audio_dir": f"{dataset}/audio",
            "text_dir": f"{dataset}/text",
            "queries": len(split.records),
            "recordings": len({r["vid"] for r in split.records}),
            "windows": sum(len(r.get("relevant_windows", [])) for r in split.records),
        }
        if split.faults:
            manifest["faults"][split.name] = {
                kind: {"count": len(ids), "ids": ids} for kind, ids in split.faults.items()
            }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


# ---------------------------------------------------------------------------------------------
# Features for a given annotation file
# ---------------------------------------------------------------------------------------------
def synthesise_features(
    annotations: str | Path, audio_dir: str | Path, text_dir: str | Path, seed: int = 0
) -> dict:
    """Grounded features for the queries of ``annotations`` (official JSONL); returns counts.

    Audio: T = duration (the largest one when a vid is annotated with several); each query's
    event sounds at its windows clipped to [0, T] (windows the official filter drops, empty or
    longer than 1500 s, are skipped); one or two distractor events fill free time.
    """
    from amr.data.annotations import read_annotations

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    queries = read_annotations(annotations)
    audio_dir, text_dir = Path(audio_dir), Path(text_dir)
    by_vid: dict[str, list] = {}
    for q in queries:
        by_vid.setdefault(q.vid, []).append(q)

    skipped_windows = 0
    hidden_windows = 0
    for vid, vid_queries in by_vid.items():
        n_frames = max(1, int(round(max(q.duration for q in vid_queries))))
        rng = _rng(seed, "annotated layout", vid)
        timeline = _Timeline(max(n_frames, 3), rng)
        events: list[_Event] = []
        for q in vid_queries:
            windows = []
            for start, end in q.windows or []:
                if not 0 < end - start <= 1500:
                    skipped_windows += 1
                    continue
                start, end = max(0.0, start), min(float(n_frames), end)
                if end > start:
                    windows.append((start, end))
                    timeline.busy[int(start):int(math.ceil(end))] = True
            if q.windows is None:  # blind list: hide the event somewhere so it can be found
                placed = timeline.place(_castella_length(n_frames, rng))
                windows = [placed] if placed is not None else [(0.0, float(n_frames))]
                hidden_windows += 1
            events.append(_Event(_query_signature(seed, q.query), windows))
        used_words = {w for q in vid_queries for w in content_words(tokenize(q.query))}
        for event_type in _pick_event_types(rng, int(rng.integers(1, 3)), used_words):
            placed = timeline.place(_castella_length(n_frames, rng))
            if placed is not None:
                events.append(_Event(_query_signature(seed, " ".join(event_type)), [placed]))
        write_npz(audio_dir / f"{vid}.npz", "features",
                  _render_audio(n_frames, events, _rng(seed, "audio", vid)))

    for q in queries:
        write_npz(text_dir / f"qid{q.qid}.npz", "last_hidden_state",
                  _token_states(seed, q.query, _rng(seed, "text", q.qid)))
    return {
        "annotations": str(annotations),
        "seed": seed,
        "queries": len(queries),
        "recordings": len(by_vid),
        "audio_files": len(by_vid),
        "text_files": len(queries),
        "skipped_windows": skipped_windows,
        "hidden_windows": hidden_windows,
    }
