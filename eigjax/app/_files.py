"""Safe file writes for the application (batch evaluator, runner): atomic, no symlinks.

- :func:`atomic_write_bytes` (``_text``, ``_json``): readers see the old or the new file,
  never a torn one, whatever moment the process dies at, and after a power loss too. A
  temporary file in the same directory, created with
  ``O_EXCL | O_NOFOLLOW`` under an unpredictable name (so a planted link is never written
  through), is written, flushed, fsync'd, ``os.replace``d over the target (which replaces
  a link at the target, never its referent), and the directory is fsync'd.
- :func:`open_nofollow`: ``os.open`` that refuses a symbolic link as the last path
  component (:class:`SymlinkRefused`, naming the link and its target).
- :func:`allocate`: reserve a file's blocks up front (``posix_fallocate``, or zeros
  written past the current end where the filesystem cannot), so a full disk is an
  ``OSError(ENOSPC)`` before any work, not a SIGBUS in a memory map later.
- :class:`DirLock`: a non-blocking ``flock`` on a lock file naming its holder's pid.
- :func:`remove_temps`: clean up the temporary files of a writer killed mid-write.

The one implementation of these for the application: the runner (checkpoints, summaries,
plots, ``metrics.jsonl``) and the batch evaluator both use it. Only the standard library.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
from typing import Any

_BLOCK = 8 << 20  # zeros written per call by the allocate fallback


class SymlinkRefused(OSError):
    """A path that eigjax would write is a symbolic link it did not create."""


def _link_message(path: str) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return (
        f"refusing to write through the symbolic link {path} -> {target} "
        "(expected a regular file or nothing there; remove the link or choose another output directory)"
    )


def check_not_symlink(path: str) -> None:
    """Raise :class:`SymlinkRefused` if ``path`` is a symbolic link (dangling ones too)."""
    if os.path.islink(path):
        raise SymlinkRefused(errno.ELOOP, _link_message(path), path)


def open_nofollow(path: str, flags: int, mode: int = 0o666) -> int:
    """``os.open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode)``; a link is :class:`SymlinkRefused`."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP or (e.errno == errno.EEXIST and os.path.islink(path)):
            raise SymlinkRefused(errno.ELOOP, _link_message(path), path) from None
        raise


def fsync_dir(directory: str) -> None:
    """fsync a directory so that a rename in it survives a power loss (no-op where unsupported)."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems cannot fsync a directory
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (see the module docstring).

    The file is fsync'd before the rename and its directory after it, so the new content
    survives a power loss as well as a killed process.

    Args:
      path: the file to write; a symbolic link there is replaced, never followed.
      data: the new content.

    Raises:
      OSError: as raised by the filesystem (``ENOSPC`` for a full disk); the temporary file
        is removed and ``path`` keeps its old content.
    """
    directory, base = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            break
        except (FileExistsError, SymlinkRefused):
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


def remove_temps(path: str) -> list[str]:
    """Remove the temporary files :func:`atomic_write_bytes` left for ``path`` when killed.

    Call it only while no other process writes ``path`` (e.g. under a :class:`DirLock`).
    Returns the names removed.
    """
    directory, base = os.path.split(os.path.abspath(path))
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if name.startswith(f".{base}.") and name.endswith(".tmp"):
            try:
                os.unlink(os.path.join(directory, name))  # a link is removed, not followed
                removed.append(name)
            except FileNotFoundError:
                pass
    return removed


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def allocate(fd: int, size: int) -> None:
    """Make the file ``fd`` at least ``size`` bytes with every block reserved.

    ``os.posix_fallocate`` where the filesystem supports it; otherwise zeros are written
    from the current end of the file to ``size`` in blocks (existing bytes are never
    overwritten). A full disk raises ``OSError(ENOSPC)`` here.
    """
    if size <= 0:
        return
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS):
                raise
    _allocate_by_writing(fd, size)


def _allocate_by_writing(fd: int, size: int) -> None:
    pos = os.fstat(fd).st_size
    zeros = bytes(min(_BLOCK, max(size - pos, 0)))
    while pos < size:
        k = min(len(zeros), size - pos)
        pos += os.pwrite(fd, zeros[:k] if k < len(zeros) else zeros, pos)


class LockHeld(OSError):
    """Another process holds the lock; the message names the lock file and the holder."""


class DirLock:
    """An exclusive, non-blocking ``flock`` on ``path`` for the life of the object.

    The holder writes ``pid <pid> host <hostname>`` into the file, so a refused process
    can name it. The lock is released when the process dies, however it dies; the file
    itself stays (removing it would race with a process about to lock it).
    """

    def __init__(self, path: str):
        import fcntl

        self.path = path
        self.fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(self.fd)
                raise
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip() or "pid unknown"
            os.close(self.fd)
            raise LockHeld(
                errno.EWOULDBLOCK,
                f"{path} is locked by another run ({holder}); wait for it to finish or stop it, "
                "or use another output directory",
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} host {socket.gethostname()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
