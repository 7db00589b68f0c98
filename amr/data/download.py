"""Fetch the official feature archives and annotation files (``data.source: download``).

:func:`fetch_all` downloads every file named in ``data.download`` (``params.yaml``), verifies
its size and md5, and unpacks the archives below ``data.download.folder``; the features stage
then packs the splits found at ``data.download.layout`` exactly like ``data.source: local``
(``amr.data.sources.layout_from_params(download_cfg.layout, root)``).

Layout below the download folder:

- ``archives/<dest>/<name>``: downloaded archives (kept, so re-runs can skip them),
- ``<dest>/...``: their unpacked content, and every downloaded file that is not an archive,
- ``<dest>/.unpacked-<archive>``: marker recording the md5 of the archive(s) unpacked there,
- ``.zenodo-<id>.json``: the cached file listing of a record (re-runs need no network).

Downloads stream to ``<file>.part`` and are renamed only after verification, resume with an
HTTP ``Range`` request, and retry transient errors with exponential back-off. A record's file
whose md5 is not pinned in params is checked against the md5 in the record's JSON listing
(``<zenodo_url>/api/records/<id>``); the verified md5 is printed so it can be pinned.
"""
from __future__ import annotations

import fnmatch
import hashlib
import http.client
import io
import json
import os
import shutil
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from amr.config import DownloadSource, RemoteFile, ZenodoRecord
from amr.io import write_text_atomic

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
CHUNK = 1 << 20
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
USER_AGENT = "amr-download/1 (python urllib)"


class DownloadError(RuntimeError):
    """A file could not be fetched, verified or unpacked; the message says what to do."""


@dataclass
class FileSpec:
    """A file to download, resolved from params (and the record listing when needed)."""

    name: str
    url: str
    path: Path  # final location
    md5: str = ""  # expected hex digest ("" = not known: accepted and printed)
    md5_origin: str = ""  # where the expected md5 came from, for error messages
    size: int | None = None  # expected bytes, when the listing gives it
    where: str = ""  # the params entry, e.g. "data.download.records[0]"

    @property
    def part(self) -> Path:
        return self.path.with_name(self.path.name + ".part")


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
def fetch_all(download_cfg: DownloadSource, root: Path) -> None:
    """Download, verify and unpack every record and file of ``download_cfg`` below ``root``."""
    folder = _below(Path(root), download_cfg.folder, allow_absolute=True)
    folder.mkdir(parents=True, exist_ok=True)
    fetcher = Fetcher(download_cfg)

    for i, record in enumerate(download_cfg.records):
        where = f"data.download.records[{i}]"
        target = _below(folder, record.dest or str(record.id))
        specs = resolve_record(record, download_cfg, folder, where, fetcher)
        part_names = {s.name for s in specs if record.parts and fnmatch.fnmatch(s.name, record.parts)}
        digests = {s.name: fetcher.download(s) for s in specs}
        parts = sorted((s for s in specs if s.name in part_names), key=lambda s: s.name)
        if parts:
            unpack_archive([s.path for s in parts], target, [digests[s.name] for s in parts])
        for spec in specs:
            if spec.name not in part_names and is_archive(spec.name):
                unpack_archive([spec.path], target, [digests[spec.name]])

    for i, remote in enumerate(download_cfg.files):
        spec = resolve_url_file(remote, folder, f"data.download.files[{i}]")
        digest = fetcher.download(spec)
        if is_archive(spec.name):
            unpack_archive([spec.path], _below(folder, remote.dest), [digest])

    missing = missing_layout_paths(download_cfg, Path(root))
    if missing:
        found = _listing_of(folder)
        raise DownloadError(
            "downloads verified and unpacked, but these data.download.layout paths do not exist:\n  "
            + "\n  ".join(missing)
            + f"\nfound below {folder}: {found or 'nothing'}\n"
            "Look at what the archives unpacked to and set data.download.layout in params.yaml "
            "to those folders/files.")


def _listing_of(folder: Path, depth: int = 2, limit: int = 40) -> list[str]:
    """Folders/files below ``folder`` (two levels, downloads and markers left out)."""
    out, level = [], [folder]
    for _ in range(depth):
        nxt = []
        for d in level:
            for p in sorted(d.iterdir()):
                if p.name.startswith(".") or (d == folder and p.name == "archives"):
                    continue
                out.append(str(p.relative_to(folder)) + ("/" if p.is_dir() else ""))
                if p.is_dir():
                    nxt.append(p)
        level = nxt
    return out[:limit] + ([f"... ({len(out) - limit} more)"] if len(out) > limit else [])


def missing_layout_paths(download_cfg: DownloadSource, root: Path) -> list[str]:
    """Layout entries (``data.download.layout``) that are empty or point at nothing."""
    missing = []
    for dataset in ("pretrain", "finetune", "evaluation"):
        block = getattr(download_cfg.layout, dataset)
        for key, value in vars(block).items():
            name = f"data.download.layout.{dataset}.{key}"
            if not value:
                missing.append(f"{name}: (empty)")
            elif not (Path(value) if Path(value).is_absolute() else root / value).exists():
                missing.append(f"{name}: {value}")
    return missing


# ---------------------------------------------------------------------------------------------
# Resolving params into concrete files
# ---------------------------------------------------------------------------------------------
def zenodo_file_url(zenodo_url: str, record_id: int, name: str) -> str:
    return f"{zenodo_url.rstrip('/')}/records/{record_id}/files/{urllib.parse.quote(name)}?download=1"


def zenodo_listing_url(zenodo_url: str, record_id: int) -> str:
    return f"{zenodo_url.rstrip('/')}/api/records/{record_id}"


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def resolve_record(record: ZenodoRecord, cfg: DownloadSource, folder: Path, where: str,
                   fetcher: "Fetcher") -> list[FileSpec]:
    """The files of one record, with expected md5 (pinned, else from the listing) and size."""
    if record.id <= 0:
        raise DownloadError(f"params.yaml {where}: 'id' must be the Zenodo record number")
    for j, f in enumerate(record.files):
        if not f.name or f.url or f.dest:
            raise DownloadError(f"params.yaml {where}.files[{j}]: give 'name' (and optionally "
                                "'md5') only; the URL and folder come from the record")
    pinned = {f.name: _normal_md5(f.md5, f"{where}.files[{f.name}]") for f in record.files}
    dest = record.dest or str(record.id)
    need_listing = not record.files or not all(pinned.values())
    listing = fetcher.record_listing(record.id, folder / f".zenodo-{record.id}.json") if need_listing else {}

    if record.files:
        names = [f.name for f in record.files]
        absent = [n for n in names if listing and n not in listing]
        if absent:
            raise DownloadError(f"params.yaml {where}: record {record.id} has no file(s) {absent}; "
                                f"it lists {sorted(listing)}")
    else:
        names = sorted(n for n in listing if fnmatch.fnmatch(n, record.glob or "*"))
        if not names:
            raise DownloadError(f"params.yaml {where}: no file of record {record.id} matches "
                                f"glob {record.glob!r}; it lists {sorted(listing)}")
    if record.parts and not any(fnmatch.fnmatch(n, record.parts) for n in names):
        raise DownloadError(f"params.yaml {where}: 'parts: {record.parts}' matches none of {names}")

    specs = []
    for name in names:
        listed = listing.get(name, {})
        md5, origin = pinned.get(name, ""), f"pinned in params.yaml {where}"
        if not md5:
            md5, origin = listed.get("md5", ""), f"from the listing of Zenodo record {record.id}"
        in_archives = is_archive(name) or (record.parts and fnmatch.fnmatch(name, record.parts))
        base = _below(folder / "archives" if in_archives else folder, dest)
        specs.append(FileSpec(name=name, url=zenodo_file_url(cfg.zenodo_url, record.id, name),
                              path=_below(base, name), md5=md5, md5_origin=origin,
                              size=listed.get("size"), where=where))
    return specs


def resolve_url_file(remote: RemoteFile, folder: Path, where: str) -> FileSpec:
    if not remote.url:
        raise DownloadError(f"params.yaml {where}: 'url' is empty")
    name = remote.name or PurePosixPath(urllib.parse.urlparse(remote.url).path).name
    if not name:
        raise DownloadError(f"params.yaml {where}: cannot take a file name from {remote.url}; "
                            "add 'name:'")
    base = _below(folder / "archives" if is_archive(name) else folder, remote.dest)
    return FileSpec(name=name, url=remote.url, path=_below(base, name),
                    md5=_normal_md5(remote.md5, where), md5_origin=f"pinned in params.yaml {where}",
                    where=where)


def parse_listing(payload: dict, record_id: int) -> dict[str, dict]:
    """Zenodo record JSON → ``{key: {"md5", "size"}}``."""
    files = payload.get("files")
    if isinstance(files, dict):  # InvenioRDM variant: {"entries": {key: {...}}}
        files = list((files.get("entries") or {}).values())
    if not isinstance(files, list):
        raise DownloadError(f"Zenodo record {record_id}: the listing has no 'files' list "
                            "(record restricted, or not a record id?)")
    out = {}
    for item in files:
        key = item.get("key")
        checksum = str(item.get("checksum") or "")
        if not key:
            continue
        algo, _, digest = checksum.partition(":")
        out[key] = {"md5": digest.lower() if algo == "md5" else "",
                    "size": int(item["size"]) if item.get("size") is not None else None}
    return out


def _normal_md5(value: str, where: str) -> str:
    digest = value.strip().lower()
    if digest.startswith("md5:"):
        digest = digest[4:]
    if digest and (len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest)):
        raise DownloadError(f"params.yaml {where}: md5 {value!r} is not 32 hex digits")
    return digest


def _below(base: Path, relative: str, allow_absolute: bool = False) -> Path:
    """``base/relative``, refusing names from params or a listing that climb out of ``base``."""
    pure = PurePosixPath(relative.replace("\\", "/"))
    if ".." in pure.parts or (pure.is_absolute() and not allow_absolute):
        raise DownloadError(f"path {relative!r} (params.yaml data.download) must be relative and "
                            "must not contain '..'")
    return base / relative


# ---------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------
class _Transient(Exception):
    """A failure worth retrying (the .part is kept, the next attempt resumes)."""


class Fetcher:
    """HTTP downloads with resume, verification, retries and progress."""

    def __init__(self, cfg: DownloadSource):
        self.retries = max(0, cfg.retries)
        self.retry_delay_s = max(0.0, cfg.retry_delay_s)
        self.timeout_s = cfg.timeout_s
        self.zenodo_url = cfg.zenodo_url

    # -- record listing -----------------------------------------------------------------------
    def record_listing(self, record_id: int, cache: Path) -> dict[str, dict]:
        if cache.is_file():
            try:
                return parse_listing(json.loads(cache.read_text()), record_id)
            except (json.JSONDecodeError, DownloadError):
                cache.unlink()  # a damaged cache is simply fetched again
        url = zenodo_listing_url(self.zenodo_url, record_id)

        def attempt() -> bytes:
            with self._open(url, headers={"Accept": "application/json"}) as resp:
                return resp.read()

        body = self._with_retries(attempt, f"the listing of Zenodo record {record_id} ({url})")
        try:
            payload = json.loads(body)
        except json.JSONDecodeError:
            raise DownloadError(f"{url}: not JSON; is data.download.zenodo_url right?") from None
        listing = parse_listing(payload, record_id)
        write_text_atomic(cache, json.dumps(payload))
        return listing

    # -- one file -----------------------------------------------------------------------------
    def download(self, spec: FileSpec) -> str:
        """Make ``spec.path`` hold the verified file; returns its md5."""
        present = self._present_md5(spec)
        if present:
            return present
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        digest = self._with_retries(lambda: self._transfer(spec), f"{spec.name} ({spec.url})",
                                    keep=spec.part)
        os.replace(spec.part, spec.path)  # atomic: the final name only ever holds verified data
        _write_stamp(spec.path, digest)
        if spec.md5 and spec.md5_origin.startswith("from the listing"):
            print(f"verified {spec.path.name}: md5 {digest} ({spec.md5_origin}); to pin it, list "
                  f"{{name: {spec.name}, md5: {digest}}} under {spec.where}.files", flush=True)
        elif spec.md5:
            print(f"verified {spec.path.name}: md5 {digest} ({spec.md5_origin})", flush=True)
        else:
            print(f"downloaded {spec.path.name}: md5 {digest} (not verified: no md5 known; pin "
                  f"it as 'md5: {digest}' under {spec.where})", flush=True)
        return digest

    def _present_md5(self, spec: FileSpec) -> str:
        """The md5 of an already present, correct final file ("" when it must be fetched)."""
        if not spec.path.is_file():
            return ""
        digest = _stamped_md5(spec.path) or md5_file(spec.path)
        if not spec.md5 or digest == spec.md5:
            _write_stamp(spec.path, digest)
            print(f"present {spec.path.name}: md5 {digest}", flush=True)
            return digest
        print(f"{spec.path}: md5 {digest} differs from the expected {spec.md5} "
              f"({spec.md5_origin}); downloading it again", flush=True)
        spec.path.unlink()
        _stamp_path(spec.path).unlink(missing_ok=True)
        return ""

    def _transfer(self, spec: FileSpec) -> str:
        """One attempt: resume or start ``spec.part``, stream the rest, verify. Returns md5."""
        have = spec.part.stat().st_size if spec.part.exists() else 0
        if spec.size is not None and have > spec.size:
            spec.part.unlink()  # longer than the file can be: start again
            have = 0
        if spec.size is not None and have == spec.size:
            return self._verify(spec)  # complete from an earlier run; nothing to ask for

        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            resp = self._open(spec.url, headers=headers)
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:
                # the server has nothing past our bytes: the part is complete, or it is wrong
                try:
                    return self._verify(spec)
                except DownloadError:
                    if spec.md5 or spec.size is not None:
                        raise _Transient("the partial file did not verify after HTTP 416; "
                                         "starting again") from None
                    raise
            raise

        with resp:
            if have and resp.status == 206:
                start = _content_range_start(resp.headers.get("Content-Range"))
                if start != have:
                    spec.part.unlink()
                    raise _Transient(f"server resumed at byte {start}, expected {have}")
                mode, hasher = "ab", md5_file(spec.part, hasher=True)
            else:  # fresh download, or a server that ignored Range (200): start from 0
                mode, hasher, have = "wb", hashlib.md5(), 0
            total = spec.size if spec.size is not None else _total_size(resp, have)
            with spec.part.open(mode) as out, TransferProgress(spec.name, total, have) as bar:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    hasher.update(chunk)
                    bar.advance(len(chunk))
        got = spec.part.stat().st_size
        if total is not None and got < total:
            raise _Transient(f"connection closed after {got} of {total} bytes")
        return self._verify(spec, hasher.hexdigest())

    def _verify(self, spec: FileSpec, digest: str = "") -> str:
        size = spec.part.stat().st_size
        digest = digest or md5_file(spec.part)
        problem = ""
        if spec.size is not None and size != spec.size:
            problem = f"got {size} bytes, expected {spec.size}"
        elif spec.md5 and digest != spec.md5:
            problem = f"got md5 {digest}, expected {spec.md5} ({spec.md5_origin})"
        if problem:
            spec.part.unlink()
            fix = ("if it fails again, the pinned md5 is wrong: fix or remove 'md5:' for this file "
                   f"under {spec.where} in params.yaml" if "pinned" in spec.md5_origin else
                   "if it fails again, the server is serving different bytes than it lists; "
                   "report it to the dataset's maintainers")
            raise DownloadError(f"{spec.name} from {spec.url}: {problem}. The downloaded data was "
                                f"deleted. Re-run to download it again; {fix}.")
        return digest

    # -- plumbing -----------------------------------------------------------------------------
    def _open(self, url: str, headers: dict | None = None):
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
        return urllib.request.urlopen(request, timeout=self.timeout_s)

    def _with_retries(self, attempt, what: str, keep: Path | None = None):
        last = None
        for k in range(self.retries + 1):
            if k:
                delay = self.retry_delay_s * 2 ** (k - 1)
                print(f"retrying {what} in {delay:.0f} s (attempt {k + 1}/{self.retries + 1}): "
                      f"{last}", flush=True)
                time.sleep(delay)
            try:
                return attempt()
            except urllib.error.HTTPError as err:
                if err.code not in TRANSIENT_HTTP:
                    raise DownloadError(f"{what}: HTTP {err.code} {err.reason}; check the record "
                                        "id / file name / URL in params.yaml") from None
                last = f"HTTP {err.code} {err.reason}"
            except (_Transient, urllib.error.URLError, http.client.HTTPException, ConnectionError,
                    socket.timeout, TimeoutError) as err:
                last = f"{type(err).__name__}: {err}"
        kept = (f"; the partial file {keep} is kept and the next run resumes it"
                if keep is not None and keep.exists() else "")
        raise DownloadError(f"could not fetch {what} after {self.retries + 1} attempts "
                            f"({last}){kept}. Check the network and re-run.")


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-999/1000"
    try:
        return int(value.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _total_size(resp, have: int) -> int | None:
    content_range = resp.headers.get("Content-Range")
    if resp.status == 206 and content_range and "/" in content_range:
        tail = content_range.rsplit("/", 1)[1]
        return int(tail) if tail.isdigit() else None
    length = resp.headers.get("Content-Length")
    return int(length) + (have if resp.status == 206 else 0) if length and length.isdigit() else None


def md5_file(path: Path, hasher: bool = False):
    with Path(path).open("rb") as fh:
        h = hashlib.file_digest(fh, "md5")
    return h if hasher else h.hexdigest()


# A verified file carries a stamp (md5 + size + mtime) so re-runs skip re-hashing large archives.
def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _write_stamp(path: Path, digest: str) -> None:
    st = path.stat()
    _stamp_path(path).write_text(json.dumps({"md5": digest, "size": st.st_size,
                                             "mtime_ns": st.st_mtime_ns}))


def _stamped_md5(path: Path) -> str:
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        st = path.stat()
        if stamp["size"] == st.st_size and stamp["mtime_ns"] == st.st_mtime_ns:
            return stamp["md5"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return ""


class TransferProgress:
    """A rich progress bar on a terminal; otherwise a plain line every 10 %."""

    def __init__(self, name: str, total: int | None, completed: int = 0):
        self.name, self.total, self.done = name, total, completed
        self._rich = None
        self._next_report = 0.1
        self._started = time.monotonic()

    def __enter__(self) -> "TransferProgress":
        if sys.stderr.isatty():
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                       TimeRemainingColumn, TransferSpeedColumn)

            self._rich = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(), transient=False)
            self._rich.start()
            self._task = self._rich.add_task(self.name, total=self.total, completed=self.done)
        else:
            resumed = f", resuming at {_human(self.done)}" if self.done else ""
            size = _human(self.total) if self.total is not None else "unknown size"
            print(f"downloading {self.name} ({size}{resumed})", flush=True)
            if self.total:
                self._next_report = (int(10 * self.done / self.total) + 1) / 10
        return self

    def advance(self, n: int) -> None:
        self.done += n
        if self._rich is not None:
            self._rich.update(self._task, advance=n)
        elif self.total and self.done / self.total >= self._next_report and self.done < self.total:
            rate = self.done / max(time.monotonic() - self._started, 1e-6)
            print(f"  {self.name}: {100 * self.done / self.total:.0f}% of {_human(self.total)} "
                  f"({_human(rate)}/s)", flush=True)
            self._next_report = (int(10 * self.done / self.total) + 1) / 10

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# ---------------------------------------------------------------------------------------------
# Unpacking
# ---------------------------------------------------------------------------------------------
class ChainedReader(io.RawIOBase):
    """Read several files as one seekable byte stream (the parts of a split archive)."""

    def __init__(self, paths: list[Path]):
        self.paths = [Path(p) for p in paths]
        self.sizes = [p.stat().st_size for p in self.paths]
        self.length = sum(self.sizes)
        self.pos = 0
        self._index, self._fh = -1, None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self.pos < self.length:
            index, offset = self._locate(self.pos)
            if index != self._index:
                if self._fh is not None:
                    self._fh.close()
                self._fh, self._index = self.paths[index].open("rb"), index
            self._fh.seek(offset)
            n = self._fh.readinto(view[filled:filled + min(len(view) - filled,
                                                           self.sizes[index] - offset)])
            if not n:
                raise DownloadError(f"{self.paths[index]}: shorter than when the parts were listed")
            filled += n
            self.pos += n
        return filled

    def _locate(self, pos: int) -> tuple[int, int]:
        for i, size in enumerate(self.sizes):
            if pos < size:
                return i, pos
            pos -= size
        raise EOFError(pos)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        super().close()


def unpack_archive(parts: list[Path], target: Path, digests: list[str]) -> bool:
    """Unpack one archive (several parts are joined in the given order) into ``target``.

    Idempotent: a marker in ``target`` records the archive's md5(s); a re-run with the same
    archive does nothing and returns False. Members are extracted into a staging folder first and
    moved into ``target`` only when every member is safe and the archive read to its end.
    """
    label = _archive_label(parts)
    marker = target / f".unpacked-{label}"
    record = {"archives": [p.name for p in parts], "md5": list(digests)}
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == record:
                print(f"unpacked already: {label} → {target}", flush=True)
                return False
        except ValueError:
            pass
    target.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".unpacking-{target.name}-{label}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    what = parts[0] if len(parts) == 1 else f"{parts[0]} (+{len(parts) - 1} parts)"
    print(f"unpacking {label} → {target}", flush=True)
    try:
        with ChainedReader(parts) as raw, io.BufferedReader(raw, CHUNK) as stream:
            head = stream.peek(4)[:4]
            if head[:2] == b"PK":
                _extract_zip(stream, staging, what)
            else:
                _extract_tar(stream, staging, what)
        _merge_into(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    marker.write_text(json.dumps(record))
    return True


def _archive_label(parts: list[Path]) -> str:
    # e.g. "clap.tar.gz", or "clap.tar.partaa+2" for three parts starting at clap.tar.partaa
    return parts[0].name if len(parts) == 1 else f"{parts[0].name}+{len(parts) - 1}"


def _member_target(root: Path, name: str, what: str) -> Path:
    """Where an archive member goes; raises if it would land outside ``root``."""
    clean = name.replace("\\", "/")
    pure = PurePosixPath(clean)
    drive = len(clean) > 1 and clean[0].isalpha() and clean[1] == ":"  # "C:/x" (Windows)
    if pure.is_absolute() or drive or ".." in pure.parts:
        raise DownloadError(f"{what}: member {name!r} would be written outside {root}; refusing "
                            "to unpack this archive (nothing was unpacked). Delete it and re-run "
                            "to download it again.")
    return root.joinpath(*pure.parts)


def _extract_tar(stream, staging: Path, what) -> None:
    try:
        # streaming mode ("r|*"): one pass, works for joined parts and any compression
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                dest = _member_target(staging, member.name, what)
                if member.issym() or member.islnk():
                    # a symlink is relative to its folder, a hard link to the archive root
                    link_base = dest.parent if member.issym() else staging
                    _check_link(staging, link_base, member.linkname, member.name, what)
                elif not (member.isfile() or member.isdir()):
                    raise DownloadError(f"{what}: member {member.name!r} is a device or fifo; "
                                        "refusing to unpack this archive")
                tar.extract(member, staging, filter="data")
    except tarfile.FilterError as err:
        raise DownloadError(f"{what}: unsafe member refused ({err}); nothing was unpacked") from None
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as err:
        raise DownloadError(f"{what}: not a readable archive ({type(err).__name__}: {err}); delete "
                            "it and re-run to download it again") from None


def _check_link(staging: Path, base: Path, linkname: str, name: str, what) -> None:
    resolved = os.path.normpath(os.path.join(base, linkname))
    if os.path.commonpath([resolved, str(staging)]) != str(staging):
        raise DownloadError(f"{what}: link {name!r} → {linkname!r} points outside the target "
                            "folder; refusing to unpack this archive (nothing was unpacked)")


def _extract_zip(stream, staging: Path, what) -> None:
    try:
        with zipfile.ZipFile(stream) as zf:
            infos = zf.infolist()
            for info in infos:  # zip has a central directory: check everything before writing
                _member_target(staging, info.filename, what)
            for info in infos:
                zf.extract(info, staging)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DownloadError(f"{what}: not a readable zip ({type(err).__name__}: {err}); delete it "
                            "and re-run to download it again") from None


def _merge_into(source: Path, target: Path) -> None:
    """Move everything from ``source`` into ``target``, merging folders, replacing files."""
    for entry in source.iterdir():
        dest = target / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if dest.is_dir() and not dest.is_symlink():
                _merge_into(entry, dest)
                continue
            if dest.exists() or dest.is_symlink():
                _remove(dest)
        elif dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(entry, dest)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
