"""eigjax.app._files: the atomic-write / no-symlink / allocation / lock helpers of the application."""

import errno
import os
import stat

import pytest

from eigjax.app import _files


def test_atomic_write_replaces_content_with_fsync_of_file_and_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(_files.os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real(fd)))
    p = tmp_path / "a.json"
    p.write_text("old")
    _files.atomic_write_json(str(p), {"x": 1})
    assert p.read_text() == '{\n  "x": 1\n}\n' and synced == [False, True]
    assert os.listdir(tmp_path) == ["a.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o666 & ~umask  # as open() makes it, not mkstemp's 0600


def test_atomic_write_failure_keeps_the_old_content_and_no_temporary(tmp_path, monkeypatch):
    p = tmp_path / "a.json"
    p.write_text("old")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_files.os, "replace", full)
    with pytest.raises(OSError, match="No space"):
        _files.atomic_write_text(str(p), "new")
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]


def test_atomic_write_never_writes_through_a_planted_temporary_link(tmp_path, monkeypatch):
    names = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(_files.secrets, "token_hex", lambda n: next(names))
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.symlink(victim, tmp_path / f".a.json.{os.getpid()}.aaaa.tmp")
    _files.atomic_write_text(str(tmp_path / "a.json"), "new")
    assert victim.read_text() == "precious" and (tmp_path / "a.json").read_text() == "new"
    assert _files.remove_temps(str(tmp_path / "a.json")) == [f".a.json.{os.getpid()}.aaaa.tmp"]
    assert victim.read_text() == "precious"


def test_open_nofollow_refuses_a_link_naming_it_and_its_target(tmp_path):
    os.symlink(tmp_path / "elsewhere", tmp_path / "link")
    with pytest.raises(_files.SymlinkRefused, match="symbolic link .*link -> .*elsewhere"):
        _files.open_nofollow(str(tmp_path / "link"), os.O_WRONLY | os.O_CREAT)
    assert not (tmp_path / "elsewhere").exists()


def test_dir_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    path = str(tmp_path / "x.lock")
    with _files.DirLock(path):
        with pytest.raises(_files.LockHeld, match=f"x.lock is locked by another run \\(pid {os.getpid()} "):
            _files.DirLock(path)
    _files.DirLock(path).release()  # free again once released


def test_allocation_fallback_writes_zeros_past_the_end_only(tmp_path, monkeypatch):
    def unsupported(fd, off, size):
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(_files.os, "posix_fallocate", unsupported)
    monkeypatch.setattr(_files, "_BLOCK", 1000)
    p = tmp_path / "f"
    p.write_bytes(b"x" * 10)
    fd = os.open(p, os.O_RDWR)
    _files.allocate(fd, 2510)
    os.close(fd)
    assert p.read_bytes() == b"x" * 10 + bytes(2500)
