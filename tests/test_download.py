"""Download, verification and unpacking against a local HTTP server (loopback only)."""
import dataclasses
import hashlib
import io
import json
import re
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from amr.config.params import Params
from amr.config.schema import (
    DownloadSource,
    EvaluationFiles,
    FinetuneFiles,
    LocalSource,
    PretrainFiles,
    RemoteFile,
    ZenodoRecord,
)
from amr.data.download import DownloadError, fetch_all, unpack_archive

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# A tiny Zenodo look-alike
# ---------------------------------------------------------------------------------------------
@dataclass
class Served:
    body: bytes
    honour_range: bool = True
    wrong_bytes: bool = False  # serve corrupted content of the same length
    fail_times: int = 0  # answer 503 this many times first
    cut_first_at: int | None = None  # first full response stops after this many bytes


@dataclass
class Hit:
    path: str
    range: str | None
    status: int
    sent: int


@dataclass
class FakeZenodo:
    files: dict = field(default_factory=dict)  # url path -> Served
    records: dict = field(default_factory=dict)  # record id -> list of listed names
    hits: list = field(default_factory=list)
    url: str = ""

    def add(self, record: int, name: str, body: bytes, listed_md5: str | None = None, **kw):
        self.files[f"/records/{record}/files/{name}"] = Served(body, **kw)
        md5 = listed_md5 if listed_md5 is not None else hashlib.md5(body).hexdigest()
        self.records.setdefault(record, []).append(
            {"key": name, "size": len(body), "checksum": f"md5:{md5}",
             "links": {"self": f"{self.url}/api/records/{record}/files/{name}/content"}})

    def file_hits(self, name: str) -> list[Hit]:
        return [h for h in self.hits if h.path.endswith(f"/files/{name}")]


def make_handler(state: FakeZenodo):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _send(self, status: int, body: bytes, headers: dict | None = None, limit=None):
            out = body if limit is None else body[:limit]
            # logged before the status line goes out (end_headers flushes it), so the client
            # never sees a response that is not logged yet
            state.hits.append(Hit(self.path.split("?")[0], self.headers.get("Range"), status, len(out)))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(out)
            self.wfile.flush()

        def do_GET(self):
            path = self.path.split("?")[0]
            m = re.fullmatch(r"/api/records/(\d+)", path)
            if m:
                if int(m.group(1)) not in state.records:
                    return self._send(404, b"{}")
                body = json.dumps({"id": int(m.group(1)), "files": state.records[int(m.group(1))]})
                return self._send(200, body.encode(), {"Content-Type": "application/json"})
            served = state.files.get(path)
            if served is None:
                return self._send(404, b"not found")
            if served.fail_times:
                served.fail_times -= 1
                return self._send(503, b"busy")
            body = served.body
            if served.wrong_bytes:
                body = bytes(b ^ 0xFF for b in body)
            requested = self.headers.get("Range")
            if requested and served.honour_range:
                start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
                if start >= len(body):
                    return self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                return self._send(206, body[start:],
                                  {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
            limit, served.cut_first_at = served.cut_first_at, None
            return self._send(200, body, limit=limit)

    return Handler


@pytest.fixture
def zenodo(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    state = FakeZenodo()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


# ---------------------------------------------------------------------------------------------
# Archives and configs
# ---------------------------------------------------------------------------------------------
def npz_bytes(rows: int, seed: int) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, features=np.random.default_rng(seed).standard_normal((rows, 8)).astype(np.float32))
    return buf.getvalue()


def feature_members() -> dict[str, bytes]:
    ann = "".join(json.dumps({"qid": f"v{i}_0", "query": "a dog barks", "duration": 12,
                              "vid": f"v{i}", "relevant_windows": [[1, 4]]}) + "\n" for i in range(3))
    members = {f"clap/v{i}.npz": npz_bytes(12, i) for i in range(3)}
    members["ann.jsonl"] = ann.encode()
    return members


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz", extra=()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def full_layout(folder: str) -> LocalSource:
    """Every layout path at the download folder itself, so only the download is under test."""
    return LocalSource(PretrainFiles(folder, folder, folder, folder),
                       FinetuneFiles(folder, folder, folder, folder, folder),
                       EvaluationFiles(folder, folder, folder))


def config(server: FakeZenodo, records=(), files=(), **kw) -> DownloadSource:
    values = dict(folder="dl", zenodo_url=server.url, retries=2, timeout_s=10.0,
                  layout=full_layout("dl"))
    return DownloadSource(records=list(records), files=list(files), **{**values, **kw})


def castella_record(body: bytes, pinned: bool = True) -> ZenodoRecord:
    return ZenodoRecord(id=18358706, dest="castella",
                        files=[RemoteFile(name="clap.tar.gz", md5=md5(body) if pinned else "")])


def assert_unpacked(target: Path, members: dict[str, bytes]) -> None:
    for name, data in members.items():
        assert (target / name).read_bytes() == data, name


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------
def test_fresh_download_verifies_and_unpacks(zenodo, tmp_path, capsys):
    members = feature_members()
    body = tar_bytes(members)
    zenodo.add(18358706, "clap.tar.gz", body)
    fetch_all(config(zenodo, [castella_record(body)]), tmp_path)

    archive = tmp_path / "dl/archives/castella/clap.tar.gz"
    assert archive.read_bytes() == body
    assert not archive.with_name("clap.tar.gz.part").exists()
    assert_unpacked(tmp_path / "dl/castella", members)
    assert (tmp_path / "dl/castella/.unpacked-clap.tar.gz").is_file()
    assert f"verified clap.tar.gz: md5 {md5(body)}" in capsys.readouterr().out
    # every md5 was pinned: no listing needed, one plain request
    assert [(h.path, h.range, h.status) for h in zenodo.hits] == \
        [("/records/18358706/files/clap.tar.gz", None, 200)]


def test_resume_asks_for_the_remaining_bytes_only(zenodo, tmp_path):
    members = feature_members()
    body = tar_bytes(members)
    zenodo.add(18358706, "clap.tar.gz", body)
    part = tmp_path / "dl/archives/castella/clap.tar.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:1000])

    fetch_all(config(zenodo, [castella_record(body)]), tmp_path)

    (hit,) = zenodo.file_hits("clap.tar.gz")
    assert (hit.range, hit.status, hit.sent) == ("bytes=1000-", 206, len(body) - 1000)
    assert (tmp_path / "dl/archives/castella/clap.tar.gz").read_bytes() == body
    assert_unpacked(tmp_path / "dl/castella", members)


def test_complete_part_answered_416_is_verified(zenodo, tmp_path):
    body = tar_bytes(feature_members())
    zenodo.add(18358706, "clap.tar.gz", body)
    part = tmp_path / "dl/archives/castella/clap.tar.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(body)

    fetch_all(config(zenodo, [castella_record(body)]), tmp_path)

    assert [(h.range, h.status) for h in zenodo.file_hits("clap.tar.gz")] == \
        [(f"bytes={len(body)}-", 416)]
    assert (tmp_path / "dl/archives/castella/clap.tar.gz").read_bytes() == body


def test_server_ignoring_range_restarts_from_zero(zenodo, tmp_path):
    members = feature_members()
    body = tar_bytes(members)
    zenodo.add(18358706, "clap.tar.gz", body, honour_range=False)
    part = tmp_path / "dl/archives/castella/clap.tar.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 700)  # appending to these bytes would fail the md5

    fetch_all(config(zenodo, [castella_record(body)]), tmp_path)

    (hit,) = zenodo.file_hits("clap.tar.gz")
    assert (hit.range, hit.status, hit.sent) == ("bytes=700-", 200, len(body))
    assert (tmp_path / "dl/archives/castella/clap.tar.gz").read_bytes() == body
    assert_unpacked(tmp_path / "dl/castella", members)


def test_corrupted_download_fails_clearly_and_leaves_nothing(zenodo, tmp_path):
    body = tar_bytes(feature_members())
    zenodo.add(18358706, "clap.tar.gz", body, wrong_bytes=True)
    bad = md5(bytes(b ^ 0xFF for b in body))

    with pytest.raises(DownloadError) as err:
        fetch_all(config(zenodo, [castella_record(body)], retries=1), tmp_path)

    message = str(err.value)
    assert "clap.tar.gz" in message and md5(body) in message and bad in message
    assert "Re-run" in message and "pinned" in message
    # the damaged bytes are not resumed: the retry downloads the whole file again
    assert [(h.range, h.status) for h in zenodo.file_hits("clap.tar.gz")] == [(None, 200)] * 2
    assert list((tmp_path / "dl/archives/castella").iterdir()) == []  # no file, .part or temp
    assert not (tmp_path / "dl/castella").exists()


def test_present_files_are_skipped_and_not_unpacked_twice(zenodo, tmp_path):
    members = feature_members()
    body = tar_bytes(members)
    zenodo.add(18358706, "clap.tar.gz", body)
    cfg = config(zenodo, [castella_record(body, pinned=False)])
    fetch_all(cfg, tmp_path)
    edited = tmp_path / "dl/castella/ann.jsonl"
    edited.write_text("changed after unpacking\n")
    zenodo.hits.clear()

    fetch_all(cfg, tmp_path)

    assert zenodo.hits == []  # cached listing, verified archive: no network at all
    assert edited.read_text() == "changed after unpacking\n"  # the marker skipped extraction


def test_present_file_with_wrong_md5_is_downloaded_again(zenodo, tmp_path):
    body = tar_bytes(feature_members())
    zenodo.add(18358706, "clap.tar.gz", body)
    final = tmp_path / "dl/archives/castella/clap.tar.gz"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"stale")

    fetch_all(config(zenodo, [castella_record(body)]), tmp_path)

    assert final.read_bytes() == body
    assert len(zenodo.file_hits("clap.tar.gz")) == 1


def test_unpinned_md5_is_read_from_the_record_listing(zenodo, tmp_path, capsys):
    members = feature_members()
    audio, text = tar_bytes(members), tar_bytes({"clap_text/qidv0_0.npz": npz_bytes(5, 9)})
    queries = b'{"qid": "e_0", "query": "rain", "duration": 30, "vid": "e"}\n'
    zenodo.add(20450254, "clap.tar.gz", audio)
    zenodo.add(20450254, "clap_text.tar.gz", text)
    zenodo.add(20450254, "queries.jsonl", queries)
    zenodo.add(20450254, "README.md", b"not wanted")
    record = ZenodoRecord(id=20450254, dest="evaluation", glob="*[!d]")  # all but README.md

    fetch_all(config(zenodo, [record]), tmp_path)

    out = capsys.readouterr().out
    for name, data in (("clap.tar.gz", audio), ("clap_text.tar.gz", text), ("queries.jsonl", queries)):
        assert f"verified {name}: md5 {md5(data)} (from the listing of Zenodo record 20450254)" in out
    assert zenodo.hits[0].path == "/api/records/20450254"
    assert (tmp_path / "dl/evaluation/queries.jsonl").read_bytes() == queries  # not an archive
    assert_unpacked(tmp_path / "dl/evaluation", members)
    assert (tmp_path / "dl/evaluation/clap_text/qidv0_0.npz").is_file()
    assert not zenodo.file_hits("README.md")


def test_listing_md5_mismatch_is_reported(zenodo, tmp_path):
    body = tar_bytes(feature_members())
    zenodo.add(18358706, "clap.tar.gz", body, listed_md5="0" * 32)
    with pytest.raises(DownloadError, match=r"expected 0{32} \(from the listing of Zenodo record 18358706\)"):
        fetch_all(config(zenodo, [castella_record(body, pinned=False)], retries=0), tmp_path)


def test_multipart_archive_is_joined_in_name_order(zenodo, tmp_path):
    members = feature_members()
    whole = tar_bytes(members, mode="w")  # an uncompressed tar split in two
    cut = len(whole) // 2 + 123
    # listed in reverse order: the downloader must sort by name
    zenodo.add(17129257, "clap.tar.part-ab", whole[cut:])
    zenodo.add(17129257, "clap.tar.part-aa", whole[:cut])
    zenodo.add(17129257, "LICENSE.txt", b"cc-by")
    record = ZenodoRecord(id=17129257, dest="clotho_moment", parts="clap.tar.part-*")

    fetch_all(config(zenodo, [record]), tmp_path)

    assert_unpacked(tmp_path / "dl/clotho_moment", members)
    assert (tmp_path / "dl/clotho_moment/LICENSE.txt").read_bytes() == b"cc-by"
    assert (tmp_path / "dl/archives/clotho_moment/clap.tar.part-aa").is_file()
    assert (tmp_path / "dl/clotho_moment/.unpacked-clap.tar.part-aa+1").is_file()


def test_multipart_gzip_and_zip_unpack(tmp_path):
    members = feature_members()
    for kind, whole in (("tgz", tar_bytes(members)), ("zip", zip_bytes(members))):
        parts = []
        for i, chunk in enumerate((whole[:100], whole[100:2000], whole[2000:])):
            parts.append(tmp_path / f"{kind}.{i}")
            parts[-1].write_bytes(chunk)
        assert unpack_archive(parts, tmp_path / kind, ["x", "y", "z"])
        assert_unpacked(tmp_path / kind, members)
        assert not unpack_archive(parts, tmp_path / kind, ["x", "y", "z"])  # marker: skipped
    assert not list(tmp_path.glob(".unpacking-*"))  # staging (and the joined zip) removed


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def evil_link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("evil", [
    pytest.param(lambda ok: tar_bytes({**ok, "../evil.txt": b"x"}), id="dotdot"),
    pytest.param(lambda ok: tar_bytes({**ok, "/tmp/evil.txt": b"x"}), id="absolute"),
    pytest.param(lambda ok: tar_bytes(ok, extra=[evil_link("clap/up", "../../..")]), id="symlink"),
    pytest.param(lambda ok: tar_bytes(ok, extra=[evil_link("h", "../evil.txt", tarfile.LNKTYPE)]),
                 id="hardlink"),
    pytest.param(lambda ok: zip_bytes({**ok, "../evil.txt": b"x"}), id="zip-dotdot"),
])
def test_member_escaping_the_target_is_rejected(zenodo, tmp_path, evil):
    body = evil(feature_members())
    name = "clap.zip" if body[:2] == b"PK" else "clap.tar.gz"
    zenodo.add(18358706, name, body)
    record = ZenodoRecord(id=18358706, dest="castella", files=[RemoteFile(name=name, md5=md5(body))])

    with pytest.raises(DownloadError, match="outside"):
        fetch_all(config(zenodo, [record]), tmp_path)

    assert not (tmp_path / "dl/evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert list((tmp_path / "dl/castella").iterdir()) == []  # nothing half-unpacked
    assert not list((tmp_path / "dl").glob(".unpacking-*"))


def test_transient_errors_are_retried_and_resumed(zenodo, tmp_path, capsys):
    members = feature_members()
    body = tar_bytes(members)
    zenodo.add(18358706, "clap.tar.gz", body, fail_times=1, cut_first_at=1500)

    fetch_all(config(zenodo, [castella_record(body)]), tmp_path)

    hits = [(h.range, h.status, h.sent) for h in zenodo.file_hits("clap.tar.gz")]
    assert hits == [(None, 503, 4), (None, 200, 1500), ("bytes=1500-", 206, len(body) - 1500)]
    assert "retrying clap.tar.gz" in capsys.readouterr().out
    assert_unpacked(tmp_path / "dl/castella", members)


def test_missing_file_fails_without_retrying(zenodo, tmp_path):
    zenodo.records[18358706] = []
    record = ZenodoRecord(id=18358706, dest="castella",
                          files=[RemoteFile(name="nope.tar.gz", md5="0" * 32)])
    with pytest.raises(DownloadError, match=r"nope.tar.gz .*HTTP 404.*params.yaml"):
        fetch_all(config(zenodo, [record]), tmp_path)
    assert len(zenodo.hits) == 1


def test_unknown_record_fails_without_retrying(zenodo, tmp_path):
    with pytest.raises(DownloadError, match=r"listing of Zenodo record 4242 .*HTTP 404.*record id"):
        fetch_all(config(zenodo, [ZenodoRecord(id=4242, dest="x")]), tmp_path)
    assert [h.path for h in zenodo.hits] == ["/api/records/4242"]
    assert not list((tmp_path / "dl").iterdir())  # no listing cached, no temporary file


def test_plain_url_files_land_in_their_dest(zenodo, tmp_path):
    ann = b'{"qid": "a_0"}\n'
    zenodo.files["/raw/castella_val_release.jsonl"] = Served(ann)
    remote = RemoteFile(url=f"{zenodo.url}/raw/castella_val_release.jsonl", dest="castella",
                        md5=md5(ann))
    fetch_all(config(zenodo, files=[remote]), tmp_path)
    assert (tmp_path / "dl/castella/castella_val_release.jsonl").read_bytes() == ann


def test_missing_layout_paths_are_listed(zenodo, tmp_path):
    body = tar_bytes(feature_members())
    zenodo.add(18358706, "clap.tar.gz", body)
    cfg = config(zenodo, [castella_record(body)])
    finetune = dataclasses.replace(cfg.layout.finetune, audio_dir="dl/castella/features/clap")
    cfg = dataclasses.replace(cfg, layout=dataclasses.replace(cfg.layout, finetune=finetune))
    with pytest.raises(DownloadError) as err:
        fetch_all(cfg, tmp_path)
    message = str(err.value)
    assert "data.download.layout.finetune.audio_dir: dl/castella/features/clap" in message
    assert "castella" in message.split("found below")[1]


def test_bad_md5_in_params_is_rejected(zenodo, tmp_path):
    record = ZenodoRecord(id=18358706, dest="castella", files=[RemoteFile(name="a.tar", md5="xyz")])
    with pytest.raises(DownloadError, match="not 32 hex digits"):
        fetch_all(config(zenodo, [record]), tmp_path)
    assert zenodo.hits == []


def test_repository_params_describe_the_official_records():
    download = Params.load(REPO / "params.yaml").source.download
    assert [r.id for r in download.records] == [18358706, 17129257, 20450254]
    assert [f.name for f in download.records[0].files] == ["clap.tar.gz", "clap_text.tar.gz"]
    assert download.records[1].parts
    assert download.zenodo_url == "https://zenodo.org"
    assert all(re.fullmatch(r"[0-9a-f]{32}", f.md5) for f in download.files)
