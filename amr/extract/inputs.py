"""Where each recording's audio is: folders of ``<vid>.<ext>`` files and WebDataset tar shards.

A location (``data.extract.<dataset>.audio``) is a folder, searched recursively, or one ``.tar``
shard. Files with an audio suffix are recordings named by their stem; ``*.tar`` files are
Clotho-Moment shards, whose samples are ``<key>.wav`` (the mixture) + ``<key>.json``
(metadata): the recording's vid is ``<parent folder>_<stem>`` of the JSON's ``bg.path``
(``.../bg/Amsterdam/0.0_60.0.wav`` -> ``Amsterdam_0.0_60.0``), not the tar key (SPEC §2.1).

Indexing a shard reads its headers and JSON members only (an uncompressed tar can be seeked);
a recording inside a shard is addressed by byte offset, so a decoding process reads just it.
"""
from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from amr.extract.audio import AUDIO_SUFFIXES


@dataclass(frozen=True)
class AudioRef:
    """One recording: a file, or ``size`` bytes at ``offset`` of a tar shard."""

    vid: str
    path: Path
    member: str = ""  # the tar member's name; "" for a plain file
    offset: int = 0
    size: int = 0

    @property
    def name(self) -> str:
        """How messages and reports name it: the file, or ``shard.tar:member``."""
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    def read(self) -> bytes | Path:
        if not self.member:
            return self.path
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            return fh.read(self.size)


def vid_from_bg_path(bg_path: str) -> str:
    path = PurePosixPath(bg_path.replace("\\", "/"))
    return f"{path.parent.name}_{path.stem}"


def _sample_key(member: str) -> tuple[str, str]:
    """WebDataset grouping: ``dir/abc.wav`` -> (``dir/abc``, ``wav``), split at the first dot of
    the base name."""
    folder, _, base = member.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def index_shard(path: Path, faults: dict[str, list]) -> list[AudioRef]:
    """The recordings of one shard; samples without audio, JSON or ``bg.path`` are faults."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    metadata: dict[str, object] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, ext = _sample_key(info.name)
                samples.setdefault(key, {})[ext] = info
                if ext == "json":
                    try:
                        metadata[key] = json.loads(tar.extractfile(info).read().decode("utf-8"))
                    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                        metadata[key] = exc
    except (tarfile.TarError, OSError) as exc:
        faults["shard_unreadable"].append({"file": str(path), "reason": str(exc)})
        return []
    refs = []
    for key, members in samples.items():
        where = f"{path}:{key}"
        if "wav" not in members:
            faults["tar_sample_without_audio"].append({"file": where, "members": sorted(members)})
            continue
        if "json" not in members:
            faults["tar_sample_without_json"].append({"file": f"{path}:{members['wav'].name}"})
            continue
        meta = metadata[key]
        bg = meta.get("bg") if isinstance(meta, dict) else None
        bg_path = bg.get("path") if isinstance(bg, dict) else None
        if not isinstance(bg_path, str) or not bg_path:
            reason = str(meta) if isinstance(meta, Exception) else "no bg.path"
            faults["tar_json_without_bg_path"].append(
                {"file": f"{path}:{members['json'].name}", "reason": reason})
            continue
        wav = members["wav"]
        refs.append(AudioRef(vid_from_bg_path(bg_path), path, wav.name, wav.offset_data, wav.size))
    return refs


def index_locations(locations: list[Path], faults: dict[str, list]) -> dict[str, AudioRef]:
    """vid -> where its audio is, over every location in order. A vid found twice is a fault
    (listed with both places); the first one is kept."""
    found: dict[str, AudioRef] = {}
    for location in locations:
        if location.is_file() and location.suffix == ".tar":
            files = [location]
        elif location.is_dir():
            files = sorted(p for p in location.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            faults["location_missing"].append({"file": str(location)})
            continue
        for file in files:
            if file.suffix.lower() == ".tar":
                refs = index_shard(file, faults)
            elif file.suffix.lower() in AUDIO_SUFFIXES:
                refs = [AudioRef(file.stem, file)]
            else:
                continue
            for ref in refs:
                if ref.vid in found:
                    faults["audio_duplicate"].append(
                        {"vid": ref.vid, "file": ref.name, "kept": found[ref.vid].name})
                    continue
                found[ref.vid] = ref
    return found
