"""Temp files and atomic writes: a reader sees the old file or the whole new one, never a part.

Outputs are written through a temporary sibling named by :func:`temp_name`
(``.<name>.<pid>.<random>.tmp``) and renamed into place. Leftovers of an earlier killed run are
found next to the output (:func:`stale_temp_files`) and removed only when they are provably
rep_mm's own and stale (:func:`clean_temp_files`).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator, List, Optional, Tuple

__all__ = ['RANDOM_CHARS', 'STALE_AFTER_SECONDS', 'temp_prefix', 'temp_name', 'make_temp_file',
           'plain_file_mode', 'atomic_output', 'write_bytes_atomic', 'write_json_atomic', 'TempFile',
           'stale_temp_files', 'clean_temp_files']

RANDOM_CHARS = 8  # tempfile's random part
# a temp file is removed only when its writer (the pid in its name) is gone AND it has not been
# modified for this long: the second condition covers pid namespaces / hosts sharing the disk
STALE_AFTER_SECONDS = 10 * 60


def temp_prefix(out: str, pid: Optional[int] = None) -> str:
    """``.<name>.<pid>.``: the start of every temp file rep_mm writes for ``out``."""
    return f'.{os.path.basename(out)}.{os.getpid() if pid is None else pid}.'


def temp_name(out: str, pid: Optional[int] = None) -> str:
    """The longest temp file name for ``out`` (``x`` stands for the random characters)."""
    return temp_prefix(out, pid) + 'x' * RANDOM_CHARS + '.tmp'


def make_temp_file(out: str) -> Tuple[int, str]:
    """``(fd, path)`` of a new temp file next to ``out`` (``mkstemp``; see :func:`temp_name`)."""
    directory = os.path.dirname(os.path.abspath(out))
    return tempfile.mkstemp(prefix=temp_prefix(out), suffix='.tmp', dir=directory)


def plain_file_mode(path: str) -> None:
    """Give ``path`` the permissions a plain ``open(path, 'wb')`` would (``0o666`` less the
    umask); ``mkstemp`` creates ``0o600``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_output(path: str, replace: bool = True, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary stream whose bytes appear at ``path`` all at once when the block ends.

    The stream writes a temp file next to ``path`` (:func:`make_temp_file`); on a clean exit
    the temp file gets plain-``open`` permissions (:func:`plain_file_mode`) and is renamed to
    ``path``. On any error it is removed and ``path`` is untouched.

    Args:
        path: the output file (its directory is created).
        replace: replace an existing ``path`` (``os.replace``); False moves the file into
            place only if ``path`` still does not exist (a hard link, which fails atomically),
            else ``FileExistsError``.
        durable: ``fsync`` the file before the rename and the directory after it.
    """
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    handle, tmp = make_temp_file(path)
    try:
        with os.fdopen(handle, 'wb') as stream:
            yield stream
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        plain_file_mode(tmp)
        if replace:
            os.replace(tmp, path)
        else:
            _move_no_replace(tmp, path)
        if durable:
            _fsync_directory(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _move_no_replace(tmp: str, path: str) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (a hard link fails atomically if so)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f'output {path!r} appeared while writing; not replaced') from None
    except OSError:  # file systems without hard links
        if os.path.lexists(path):
            raise FileExistsError(f'output {path!r} appeared while writing; not replaced')
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` through :func:`atomic_output` (replacing an existing file):
    readers see the old file or the whole new one, never a part. Returns the absolute path."""
    with atomic_output(path) as stream:
        stream.write(data)
    return os.path.abspath(path)


def write_json_atomic(obj: Any, path: str) -> str:
    """Write ``obj`` as indented, key-sorted JSON (:func:`write_bytes_atomic`)."""
    text = json.dumps(obj, indent=2, sort_keys=True) + '\n'
    return write_bytes_atomic(path, text.encode('utf-8'))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a pid we can reason about: treat as alive (never remove)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class TempFile:
    """A leftover ``.<name>.*.tmp`` next to an output."""

    path: str
    pid: Optional[int]  # None: an older name without pid (not provably rep_mm's)
    age: float          # seconds since its last modification
    writer_alive: bool

    @property
    def stale(self) -> bool:
        """Provably rep_mm's own and abandoned: rep_mm's name pattern with a pid, that process
        is gone, and the file has not been modified for :data:`STALE_AFTER_SECONDS`."""
        return self.pid is not None and not self.writer_alive and self.age >= STALE_AFTER_SECONDS

    def describe(self) -> str:
        if self.pid is None:
            who = 'no writer pid in its name'
        else:
            who = f'writer pid {self.pid} {"still running" if self.writer_alive else "gone"}'
        return f'{self.path} ({who}, last modified {self.age / 60:.0f} min ago)'


def stale_temp_files(out: str, now: Optional[float] = None) -> List[TempFile]:
    """Every ``.<name>.*.tmp`` regular file next to ``out`` (rep_mm's temp names for it)."""
    directory = os.path.dirname(os.path.abspath(out)) or '.'
    name = os.path.basename(out)
    ours = re.compile(rf'^\.{re.escape(name)}\.(\d+)\.[A-Za-z0-9_]{{{RANDOM_CHARS}}}\.tmp$')
    older = re.compile(rf'^\.{re.escape(name)}\.[A-Za-z0-9_]{{{RANDOM_CHARS}}}\.tmp$')
    now = time.time() if now is None else now
    found = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        match = ours.match(entry.name)
        if not (match or older.match(entry.name)):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        pid = int(match.group(1)) if match else None
        alive = True if pid is None else (pid == os.getpid() or _pid_alive(pid))
        found.append(TempFile(entry.path, pid, max(age, 0.0), alive))
    return sorted(found, key=lambda t: t.path)


def clean_temp_files(out: str) -> List[str]:
    """Remove the stale temp files of ``out``; notes on what was removed or kept (and why)."""
    notes = []
    for temp in stale_temp_files(out):
        if temp.stale:
            try:
                os.unlink(temp.path)
                notes.append(f'removed a stale temp file of an earlier killed run: '
                             f'{temp.describe()}')
            except OSError as error:
                notes.append(f'could not remove the stale temp file {temp.path}: {error}')
        else:
            notes.append(f'found a temp file next to the output, kept (not provably stale): '
                         f'{temp.describe()}; remove it yourself if no rep_mm run is writing it')
    return notes
