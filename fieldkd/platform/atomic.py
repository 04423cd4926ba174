"""Atomic file writes for shared storage: a reader sees the old file or the new one, never half.

A write goes to a temporary file in the target's folder (same file system, so the
rename is atomic), is flushed and fsynced, then renamed over the target. The
temporary name records the host and process that wrote it:
``.<name>~<host>~<pid>~<random>~tmp<suffix>`` (the target's suffix is kept, so
libraries that pick a format by extension still do). A write that is killed leaves
such a file behind; :func:`clean_stale` removes those whose writer is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import BinaryIO, Iterator

TEMP = re.compile(r"^\.(?P<name>.+)~(?P<host>[^~/]+)~(?P<pid>\d+)~[^~/]+~tmp(\.[^~/]*)?$")
OTHER_HOST_STALE_S = 24 * 3600  # a writer on another host cannot be asked whether it lives


def _host() -> str:
    return socket.gethostname().replace("~", "-") or "host"


def _temp_file(target: Path) -> tuple[int, Path]:
    # Created as open() would (0666 less the umask), not mkstemp's 0600; O_EXCL: never someone else's file.
    while True:
        path = target.parent / f".{target.name}~{_host()}~{os.getpid()}~{secrets.token_hex(4)}~tmp{target.suffix}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; some file systems refuse a directory fsync.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(tmp: Path, target: Path) -> None:
    os.replace(tmp, target)
    _fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """A temporary path to write ``target``'s content to (for libraries that want a path);
    it replaces ``target`` when the block ends without an error, and is removed otherwise."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file(target)
    os.close(fd)
    try:
        yield tmp
        _fsync_file(tmp)
        _publish(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(target: str | Path) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces ``target`` when the block ends without an error."""
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        yield fh
        fh.flush()


def write_bytes(target: str | Path, data: bytes) -> Path:
    with atomic_open(target) as fh:
        fh.write(data)
    return Path(target)


def write_text(target: str | Path, text: str) -> Path:
    return write_bytes(target, text.encode("utf-8"))


def copy_file(source: str | Path, target: str | Path) -> Path:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return Path(target)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def is_stale(path: Path, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary file of a write whose process is gone."""
    match = TEMP.match(path.name)
    if match is None:
        return False
    if match["host"] == _host():
        return not _alive(int(match["pid"]))
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > OTHER_HOST_STALE_S


def clean_stale(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Remove the leftovers of killed writes under ``folder`` (a folder fieldkd owns); returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    walk = os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]
    for root, _dirs, files in walk:
        for name in files:
            path = Path(root) / name
            if name.startswith(".") and is_stale(path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed
