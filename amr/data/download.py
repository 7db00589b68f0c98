"""Fetch the official feature archives and annotation files (``data.source: download``).

:func:`fetch_all` fetches every file named in ``data.download`` (``params.yaml``) with pooch and
unpacks the archives; the features stage then packs the splits found at ``data.download.layout``
exactly like ``data.source: local``. Below ``data.download.folder``:

- ``archives/<dest>/<name>``: downloaded archives (kept, so re-runs can skip them),
- ``<dest>/...``: their unpacked content, and every downloaded file that is not an archive,
- ``<dest>/.unpacked-<archive>``: marker recording the md5 of the archive(s) unpacked there,
- ``.zenodo-<id>.json``: the cached file listing of a record (re-runs need no network).

pooch checks each file's md5 (a present file that matches is not fetched again) and retries
failed attempts; :class:`ResumingDownloader` resumes ``<file>.part`` with an HTTP ``Range``
request. A record file without a pinned md5 is checked against the md5 in the record's listing
(``<zenodo_url>/api/records/<id>``), which is printed so it can be pinned.
"""
from __future__ import annotations

import fnmatch
import io
import json
import os
import shutil
import sys
import tarfile
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pooch
import requests
import urllib3
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)

from amr.config.schema import DownloadSource, RemoteFile, ZenodoRecord
from amr.util.errors import AmrError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
CHUNK = 1 << 20
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}  # worth another attempt; other errors are not


class DownloadError(AmrError, RuntimeError):
    """A file could not be fetched, verified or unpacked; the message says what to do."""


@dataclass
class FileSpec:
    """A file to download, resolved from params (and the record listing when needed)."""

    name: str
    url: str
    path: Path  # final location
    md5: str = ""  # expected hex digest ("" = not known: accepted and printed)
    md5_origin: str = ""  # where the expected md5 came from, for messages
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

    for i, record in enumerate(download_cfg.records):
        specs = resolve_record(record, download_cfg, folder, f"data.download.records[{i}]")
        digests = {s.name: download(s, download_cfg) for s in specs}
        target = _below(folder, record.dest or str(record.id))
        parts = sorted((s for s in specs if _is_part(record, s.name)), key=lambda s: s.name)
        if parts:
            unpack_archive([s.path for s in parts], target, [digests[s.name] for s in parts])
        for spec in specs:
            if is_archive(spec.name) and not _is_part(record, spec.name):
                unpack_archive([spec.path], target, [digests[spec.name]])

    for i, remote in enumerate(download_cfg.files):
        spec = resolve_url_file(remote, folder, f"data.download.files[{i}]")
        digest = download(spec, download_cfg)
        if is_archive(spec.name):
            unpack_archive([spec.path], _below(folder, remote.dest), [digest])

    missing = missing_layout_paths(download_cfg, Path(root))
    if missing:
        found = _listing_of(folder) or "nothing"
        raise DownloadError(
            "downloads verified and unpacked, but these data.download.layout paths do not "
            "exist:\n  " + "\n  ".join(missing) + f"\nfound below {folder}: {found}\n"
            "Look at what the archives unpacked to and set data.download.layout in params.yaml "
            "to those folders/files.")


def missing_layout_paths(download_cfg: DownloadSource, root: Path) -> list[str]:
    """Layout entries (``data.download.layout``) that are empty or point at nothing."""
    missing = []
    for dataset in ("pretrain", "finetune", "evaluation"):
        for key, value in vars(getattr(download_cfg.layout, dataset)).items():
            name = f"data.download.layout.{dataset}.{key}"
            if not value:
                missing.append(f"{name}: (empty)")
            elif not (Path(value) if Path(value).is_absolute() else root / value).exists():
                missing.append(f"{name}: {value}")
    return missing


def _listing_of(folder: Path, limit: int = 40) -> list[str]:
    """Folders/files two levels below ``folder`` (downloads and markers left out)."""
    found = [p for p in sorted(folder.glob("*")) + sorted(folder.glob("*/*"))
             if not any(n.startswith(".") for n in p.relative_to(folder).parts)
             and p.relative_to(folder).parts[0] != "archives"]
    out = [str(p.relative_to(folder)) + ("/" if p.is_dir() else "") for p in found]
    return out[:limit] + ([f"... ({len(out) - limit} more)"] if len(out) > limit else [])


# ---------------------------------------------------------------------------------------------
# Resolving params into concrete files
# ---------------------------------------------------------------------------------------------
def zenodo_file_url(zenodo_url: str, record_id: int, name: str) -> str:
    return f"{zenodo_url.rstrip('/')}/records/{record_id}/files/{urllib.parse.quote(name)}?download=1"


def zenodo_listing_url(zenodo_url: str, record_id: int) -> str:
    return f"{zenodo_url.rstrip('/')}/api/records/{record_id}"


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _is_part(record: ZenodoRecord, name: str) -> bool:
    return bool(record.parts) and fnmatch.fnmatch(name, record.parts)


def resolve_record(record: ZenodoRecord, cfg: DownloadSource, folder: Path,
                   where: str) -> list[FileSpec]:
    """The files of one record, with their expected md5 (pinned, else from the listing)."""
    if record.id <= 0:
        raise DownloadError(f"params.yaml {where}: 'id' must be the Zenodo record number")
    _http_url(cfg.zenodo_url, "data.download.zenodo_url")
    for j, f in enumerate(record.files):
        if not f.name or f.url or f.dest:
            raise DownloadError(f"params.yaml {where}.files[{j}]: give 'name' (and optionally "
                                "'md5') only; the URL and folder come from the record")
    pinned = {f.name: _normal_md5(f.md5, f"{where}.files[{j}]") for j, f in enumerate(record.files)}
    need_listing = not pinned or not all(pinned.values())
    listing = record_listing(record.id, cfg, folder, where) if need_listing else {}

    names = list(pinned) or sorted(n for n in listing if fnmatch.fnmatch(n, record.glob or "*"))
    absent = [n for n in names if listing and n not in listing]
    if absent:
        raise DownloadError(f"params.yaml {where}: record {record.id} has no file(s) {absent}; "
                            f"it lists {sorted(listing)}")
    if not names:
        raise DownloadError(f"params.yaml {where}: no file of record {record.id} matches "
                            f"glob {record.glob!r}; it lists {sorted(listing)}")
    if record.parts and not any(_is_part(record, n) for n in names):
        raise DownloadError(f"params.yaml {where}: 'parts: {record.parts}' matches none of {names}")

    specs = []
    for name in names:
        md5, origin = pinned.get(name), f"pinned in params.yaml {where}"
        if not md5:
            md5, origin = listing.get(name, ""), f"from the listing of Zenodo record {record.id}"
        home = folder / "archives" if is_archive(name) or _is_part(record, name) else folder
        path = _below(_below(home, record.dest or str(record.id)), name)
        specs.append(FileSpec(name, zenodo_file_url(cfg.zenodo_url, record.id, name), path,
                              md5, origin, where))
    return specs


def resolve_url_file(remote: RemoteFile, folder: Path, where: str) -> FileSpec:
    if not remote.url:
        raise DownloadError(f"params.yaml {where}: 'url' is empty")
    _http_url(remote.url, where)
    name = remote.name or PurePosixPath(urllib.parse.urlparse(remote.url).path).name
    if not name:
        raise DownloadError(f"params.yaml {where}: cannot take a file name from {remote.url}; "
                            "add 'name:'")
    home = folder / "archives" if is_archive(name) else folder
    return FileSpec(name, remote.url, _below(_below(home, remote.dest), name),
                    _normal_md5(remote.md5, where), f"pinned in params.yaml {where}", where)


def record_listing(record_id: int, cfg: DownloadSource, folder: Path, where: str) -> dict[str, str]:
    """``{file name: md5}`` of a Zenodo record, cached as ``<folder>/.zenodo-<id>.json``.

    pooch's own DOI resolver only knows zenodo.org, so the listing is fetched here, from the
    configurable ``data.download.zenodo_url``.
    """
    cache = folder / f".zenodo-{record_id}.json"
    _fetch(FileSpec(f"the listing of Zenodo record {record_id}",
                    zenodo_listing_url(cfg.zenodo_url, record_id), cache, where=where), cfg)
    try:
        return parse_listing(cache.read_text(), record_id)
    except DownloadError:
        cache.unlink()  # a listing that cannot be used is asked for again by the next run
        raise


def parse_listing(text: str, record_id: int) -> dict[str, str]:
    """Zenodo record JSON → ``{key: md5}`` ("" where the checksum is not an md5)."""
    try:
        files = json.loads(text).get("files")
    except (ValueError, AttributeError):
        raise DownloadError(f"the listing of Zenodo record {record_id} is not a JSON object; is "
                            "data.download.zenodo_url right?") from None
    if isinstance(files, dict):  # InvenioRDM variant: {"entries": {key: {...}}}
        files = list((files.get("entries") or {}).values())
    if not isinstance(files, list):
        raise DownloadError(f"Zenodo record {record_id}: the listing has no 'files' list "
                            "(record restricted, or not a record id?)")
    listing = {}
    for item in files:
        algo, _, digest = str(item.get("checksum") or "").partition(":")
        if item.get("key"):
            listing[item["key"]] = digest.lower() if algo == "md5" else ""
    return listing


def _normal_md5(value: str, where: str) -> str:
    digest = value.strip().lower().removeprefix("md5:")
    if digest and (len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest)):
        raise DownloadError(f"params.yaml {where}: md5 {value!r} is not 32 hex digits")
    return digest


def _http_url(url: str, where: str) -> None:
    # checked up front: a malformed URL would otherwise be retried like a network failure
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise DownloadError(f"params.yaml {where}: {url!r} is not an http(s) URL")


def _below(base: Path, relative: str, allow_absolute: bool = False) -> Path:
    """``base/relative``, refusing names from params or a listing that climb out of ``base``."""
    pure = PurePosixPath(relative.replace("\\", "/"))
    if ".." in pure.parts or (pure.is_absolute() and not allow_absolute):
        raise DownloadError(f"path {relative!r} (params.yaml data.download) must be relative and "
                            "must not contain '..'")
    return base / relative


# ---------------------------------------------------------------------------------------------
# Downloading (pooch)
# ---------------------------------------------------------------------------------------------
def download(spec: FileSpec, cfg: DownloadSource) -> str:
    """Make ``spec.path`` hold the verified file; returns its md5."""
    action = _fetch(spec, cfg)
    digest = spec.md5 or pooch.file_hash(str(spec.path), alg="md5")
    if action == "fetch":
        print(f"present {spec.path.name}: md5 {digest}", flush=True)
    elif not spec.md5:
        print(f"downloaded {spec.path.name}: md5 {digest} (not verified: no md5 known; pin it "
              f"as 'md5: {digest}' under {spec.where})", flush=True)
    else:
        pin = (f"; to pin it, list {{name: {spec.name}, md5: {digest}}} under {spec.where}.files"
               if spec.md5_origin.startswith("from the listing") else "")
        print(f"verified {spec.path.name}: md5 {digest} ({spec.md5_origin}){pin}", flush=True)
    return digest


def _fetch(spec: FileSpec, cfg: DownloadSource) -> str:
    """pooch's fetch of one file; returns its action ("download", "update" or "fetch": present
    and matching). pooch's failures become DownloadErrors."""
    attempts = max(0, cfg.retries) + 1
    # pooch waits 1 s, 2 s, 3 s, ... (at most 10 s) between attempts; the wait is not adjustable
    store = pooch.create(path=spec.path.parent, base_url="", retry_if_failed=attempts - 1,
                         registry={spec.path.name: f"md5:{spec.md5}" if spec.md5 else None},
                         urls={spec.path.name: spec.url})
    try:
        return store.fetch(spec.path.name, processor=lambda _path, action, _store: action,
                           downloader=ResumingDownloader(spec, cfg.timeout_s, attempts))
    except requests.RequestException as err:  # before ValueError: some are both
        kept = (f"; the partial file {spec.part} is kept and the next run resumes it"
                if spec.part.exists() else "")
        raise DownloadError(f"could not fetch {spec.name} ({spec.url}) after {attempts} attempts "
                            f"({err}){kept}. Check the network and re-run.") from None
    except ValueError as err:  # pooch's md5 check failed on the last attempt and deleted the file
        fix = ("if it fails again, the pinned md5 is wrong: fix or remove 'md5:' for this file "
               f"under {spec.where} in params.yaml" if "pinned" in spec.md5_origin else
               "if it fails again, the server is serving different bytes than it lists; "
               "report it to the dataset's maintainers")
        raise DownloadError(f"{spec.name} from {spec.url}: expected {spec.md5} ({spec.md5_origin})."
                            f" {err} Re-run to download it again; {fix}.") from None


class ResumingDownloader:
    """A pooch downloader that keeps ``<file>.part`` across attempts and runs and asks the server
    only for the bytes it lacks (HTTP ``Range``). pooch calls it once per attempt and checks the
    md5 of what it hands over."""

    def __init__(self, spec: FileSpec, timeout_s: float, attempts: int):
        self.spec, self.timeout_s, self.attempts = spec, timeout_s, attempts
        self.attempt, self.last_failure = 0, ""

    def __call__(self, url: str, output_file: str, store: pooch.Pooch) -> None:
        self.attempt += 1
        if self.attempt > 1:
            print(f"retrying {self.spec.name} (attempt {self.attempt}/{self.attempts}) after: "
                  f"{self.last_failure}", flush=True)
        try:
            self._complete_part(url)
        except requests.RequestException as err:  # pooch retries these; the .part stays
            self.last_failure = f"{type(err).__name__}: {err}"
            raise
        self.last_failure = "the download did not match its md5"  # the only other reason to retry
        os.replace(self.spec.part, output_file)  # pooch checks it, then gives it its final name

    def _complete_part(self, url: str) -> None:
        part = self.spec.part
        have = part.stat().st_size if part.exists() else 0
        # identity: byte ranges and the md5 refer to the file itself, not a compressed transfer
        headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout_s) as resp:
            if resp.status_code == 416 and have:
                return  # nothing past our bytes: the part is complete (or wrong: the md5 tells)
            if resp.status_code >= 400 and resp.status_code not in TRANSIENT_HTTP:
                raise DownloadError(f"{self.spec.name} ({url}): HTTP {resp.status_code} "
                                    f"{resp.reason}; check the record id / file name / URL in "
                                    f"params.yaml ({self.spec.where or 'data.download'})")
            resp.raise_for_status()
            resumed = resp.status_code == 206  # else the server ignored Range: start from 0
            if resumed and not resp.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                part.unlink()
                raise requests.RequestException(f"the server resumed at the wrong byte "
                                                f"({resp.headers.get('Content-Range')})")
            if resumed:
                print(f"resuming {self.spec.name} at byte {have}", flush=True)
            done = have if resumed else 0
            total = int(resp.headers.get("Content-Length", 0)) + done or None
            with part.open("ab" if resumed else "wb") as out, _progress_bar() as bar:
                task = bar.add_task(self.spec.name, total=total, completed=done)
                # read1 hands over what has arrived, so a broken connection loses no byte
                # (iter_content drops a partly filled chunk); its errors wrapped as requests does
                try:
                    while chunk := resp.raw.read1(CHUNK):
                        out.write(chunk)
                        bar.advance(task, len(chunk))
                except urllib3.exceptions.HTTPError as err:
                    raise requests.ConnectionError(err) from err


def _progress_bar() -> Progress:
    # a bar on a terminal only; in logs, pooch's "Downloading file ..." line stands for it
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                    disable=not sys.stderr.isatty())


# ---------------------------------------------------------------------------------------------
# Unpacking
# ---------------------------------------------------------------------------------------------
def unpack_archive(parts: list[Path], target: Path, digests: list[str]) -> bool:
    """Unpack one archive (several parts are read one after the other) into ``target``.

    A marker in ``target`` records the md5 of what was unpacked: the same archive is not
    unpacked twice (returns False). Members land in a staging folder first and move into
    ``target`` only when the whole archive was read and every member was safe.
    """
    label = parts[0].name if len(parts) == 1 else f"{parts[0].name}+{len(parts) - 1}"
    marker = target / f".unpacked-{label}"
    record = json.dumps({"archives": [p.name for p in parts], "md5": list(digests)})
    if marker.is_file() and marker.read_text() == record:
        print(f"unpacked already: {label} → {target}", flush=True)
        return False
    print(f"unpacking {label} → {target}", flush=True)
    what = str(parts[0]) if len(parts) == 1 else f"{parts[0]} (+{len(parts) - 1} parts)"
    target.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".unpacking-{target.name}-{label}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with parts[0].open("rb") as head:
            is_zip = head.read(2) == b"PK"
        (_extract_zip if is_zip else _extract_tar)(parts, staging, target, what)
        _merge_into(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    marker.write_text(record)
    return True


class _Joined(io.RawIOBase):
    """The parts of a split archive as one forward-only stream (no joined copy on disk)."""

    def __init__(self, paths: list[Path]):
        self._paths, self._fh = list(paths), None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._fh is not None or self._paths:
            if self._fh is None:
                self._fh = self._paths.pop(0).open("rb")
            n = self._fh.readinto(buffer)
            if n:
                return n
            self._fh.close()
            self._fh = None
        return 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        super().close()


def _joined(parts: list[Path]) -> io.BufferedReader:
    return io.BufferedReader(_Joined(parts), CHUNK)  # buffered: read(n) spans part boundaries


def _check_member(name: str, target: Path, what: str) -> None:
    """Refuse a member named to land outside ``target`` (absolute, a drive, or '..')."""
    clean = name.replace("\\", "/")
    drive = len(clean) > 1 and clean[0].isalpha() and clean[1] == ":"  # "C:/x" (Windows)
    if PurePosixPath(clean).is_absolute() or drive or ".." in PurePosixPath(clean).parts:
        raise DownloadError(f"{what}: member {name!r} would be written outside {target}; refusing "
                            "to unpack this archive (nothing was unpacked). Report the archive "
                            "to the dataset's maintainers.")


def _extract_tar(parts: list[Path], staging: Path, target: Path, what: str) -> None:
    # Done here rather than by pooch's Untar: on Python 3.11 Untar extracts without any check of
    # member paths, and it cannot read an archive split in parts.
    def member_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        _check_member(member.name, target, what)  # the "data" filter would strip a leading "/"
        return tarfile.data_filter(member, dest)  # refuses links out, devices, fifos

    try:
        # streaming mode ("r|*"): one forward pass over the parts, any compression
        with _joined(parts) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            tar.extractall(staging, filter=member_filter)
    except tarfile.FilterError as err:
        raise DownloadError(f"{what}: unsafe member refused ({err}); an archive may only hold "
                            f"files, folders and links that stay inside {target}. Nothing was "
                            "unpacked; report the archive to the dataset's maintainers.") from None
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DownloadError(f"{what}: could not unpack ({type(err).__name__}: {err}); if the "
                            "archive is damaged, delete it and re-run to download it "
                            "again") from None


def _extract_zip(parts: list[Path], staging: Path, target: Path, what: str) -> None:
    joined = None
    if len(parts) > 1:  # zip reads its directory from the end: it needs one seekable file
        joined = staging.with_name(staging.name + ".zip")
        with _joined(parts) as src, joined.open("wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
    try:
        with zipfile.ZipFile(joined or parts[0]) as zf:
            for info in zf.infolist():  # the central directory: check everything before writing
                _check_member(info.filename, target, what)
            zf.extractall(staging)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DownloadError(f"{what}: not a readable zip ({type(err).__name__}: {err}); delete it "
                            "and re-run to download it again") from None
    finally:
        if joined is not None:
            joined.unlink(missing_ok=True)


def _merge_into(source: Path, target: Path) -> None:
    """Move everything from ``source`` into ``target``, merging folders, replacing files."""
    for entry in source.iterdir():
        dest = target / entry.name
        if entry.is_dir() and not entry.is_symlink() and dest.is_dir() and not dest.is_symlink():
            _merge_into(entry, dest)
            continue
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        else:
            dest.unlink(missing_ok=True)
        os.replace(entry, dest)
