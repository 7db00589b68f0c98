"""amr.util.io.atomic_path: the one way every output file of the pipeline is written."""
import json
import os
import stat

import pytest

from amr.util.io import atomic_path, write_bytes_atomic, write_json, write_jsonl, write_text_atomic


def test_target_is_replaced_atomically(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.json.")
        assert tmp.exists() and tmp.read_bytes() == b""  # reserved before the block runs
        tmp.write_text("new")
        assert target.read_text() == "old"  # readers see the old file until the block ends
        inode = tmp.stat().st_ino
    assert target.read_text() == "new"
    assert target.stat().st_ino == inode  # renamed into place, not copied
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_file_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def record_fsync(fd):
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        fsync(fd)

    def record_replace(src, dst):
        events.append("replace")
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "replace", record_replace)
    write_text_atomic(tmp_path / "a.txt", "x")
    assert events == ["fsync file", "replace", "fsync folder"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_error_in_the_block_keeps_the_previous_file(tmp_path, error):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(error):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise error()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary left


def test_error_without_a_previous_file_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.json"):
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_created(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    write_text_atomic(target, "x")
    assert target.read_text() == "x"


def test_temporary_names_are_unique(tmp_path):
    with atomic_path(tmp_path / "f") as first, atomic_path(tmp_path / "f") as second:
        assert first != second
        assert str(os.getpid()) in first.name


def test_permissions_follow_the_umask_like_open(tmp_path):
    write_text_atomic(tmp_path / "atomic", "x")
    (tmp_path / "plain").write_text("x")
    assert (tmp_path / "atomic").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_helpers_write_the_expected_bytes(tmp_path):
    write_bytes_atomic(tmp_path / "b", b"\x00\x01")
    assert (tmp_path / "b").read_bytes() == b"\x00\x01"
    write_json(tmp_path / "j", {"a": [1]})
    assert (tmp_path / "j").read_text() == json.dumps({"a": [1]}, indent=2) + "\n"
    write_json(tmp_path / "j1", {"a": [1]}, indent=1)
    assert (tmp_path / "j1").read_text() == '{\n "a": [\n  1\n ]\n}\n'
    write_jsonl(tmp_path / "l", [{"q": 1}, {"q": "é"}])
    assert (tmp_path / "l").read_text() == '{"q": 1}\n{"q": "\\u00e9"}\n'
