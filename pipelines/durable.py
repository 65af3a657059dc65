"""Crash-safe replacement of files and folders: whatever is renamed into place has reached the disk first.

`os.replace` is atomic, but without an fsync a crash soon after it can leave the new name pointing at an
empty or partial file (ext4's delayed allocation, XFS), so `replace` syncs the file before the rename and
its folder after it. `swap_folder` replaces a whole folder (an SAE's weights and config together): every
file in the new folder is synced, then the two folders are exchanged in one step where Linux offers it
(renameat2 with RENAME_EXCHANGE), else by two renames, and the old one is removed. Temporary names carry the
writer's pid (`sibling`), so the next writer removes what a crashed one left (`remove_leftovers`) without
touching a running writer's.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import sys
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_LEFTOVER_KINDS = ("tmp", "old", "building")


def sibling(target: Path, kind: str) -> Path:
    """The temporary name this process uses beside `target`: `<name>.<kind>-<pid>` (kind: tmp, old,
    building)."""
    assert kind in _LEFTOVER_KINDS, kind
    return target.with_name(f"{target.name}.{kind}-{os.getpid()}")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (a rename into it) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on a folder: nothing more can be done there
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def replace(tmp: Path, target: Path) -> None:
    """`os.replace(tmp, target)` with `tmp` on disk before and the rename on disk after."""
    fsync_file(tmp)
    os.replace(tmp, target)
    fsync_dir(target.parent)


def swap_folder(built: Path, target: Path) -> None:
    """Put the finished folder `built` in place of `target` (which may not exist) and remove the old one.

    A reader of `target` sees the old folder or the new one, never a mix; only where the exchange is not
    supported is there a moment without `target` between the two renames."""
    for path in built.rglob("*"):
        if path.is_file():
            fsync_file(path)
    fsync_dir(built)
    if not target.exists():
        os.rename(built, target)
    elif not _exchange(built, target):
        old = sibling(target, "old")
        os.rename(target, old)
        os.rename(built, target)
        built = old
    fsync_dir(target.parent)
    shutil.rmtree(built, ignore_errors=True)  # the old folder, wherever it ended up


def remove_leftovers(target: Path) -> list[Path]:
    """Remove `<name>.tmp-<pid>*`, `.old-<pid>*` and `.building-<pid>*` beside `target` whose writer is no
    longer running (a crashed build); returns what was removed."""
    pattern = re.compile(rf"{re.escape(target.name)}\.(?:{'|'.join(_LEFTOVER_KINDS)})-(\d+)(?:\..*)?")
    removed = []
    for path in target.parent.iterdir() if target.parent.is_dir() else ():
        match = pattern.fullmatch(path.name)
        if match is None or _running(int(match.group(1))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover from an earlier, failed attempt
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or a number no pid can be)
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # a C library older than glibc 2.28
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # old kernel, or a file system without it
        return False
    raise OSError(code, os.strerror(code), str(b))
