"""Checks before a tool writes its output file, temp-file names, and config loading.

Every tool (``rep-mm convert`` / ``extract-scales``, ``python -m rep_mm.integrations.stock_backbones``,
``tools/*.py``) calls :func:`check_output_path` BEFORE it starts working, so a bad destination
is reported in one line and nothing is computed or written. Outputs are written through a
temporary sibling named by :func:`temp_name` (``.<name>.<pid>.<random>.tmp``) and renamed into
place; leftovers of an earlier killed run are found next to the output and removed when they
are provably rep_mm's own and stale (:func:`stale_temp_files`).
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

__all__ = ['same_file', 'check_output_path', 'NoSpaceError', 'temp_name', 'make_temp_file',
           'TempFile',
           'stale_temp_files', 'ConfigError', 'load_config_file', 'STALE_AFTER_SECONDS']

RANDOM_CHARS = 8  # tempfile's random part
# a temp file is removed only when its writer (the pid in its name) is gone AND it has not been
# modified for this long: the second condition covers pid namespaces / hosts sharing the disk
STALE_AFTER_SECONDS = 10 * 60
SPACE_MARGIN = 1.05  # free space needed: estimated size * margin + 1 MiB
SPACE_SLACK = 1 << 20


def same_file(a: str, b: str) -> bool:
    """True if paths ``a`` and ``b`` name one file (same real path, or same inode)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


# ----------------------------------------------------------------------------- temp files
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


def write_bytes_atomic(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` through a temp file next to it (:func:`make_temp_file`) and
    ``os.replace``: readers see the old file or the whole new one, never a part. The file gets
    the permissions a plain ``open(path, 'wb')`` would give (``0o666`` less the umask).
    Returns the absolute path."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, tmp = make_temp_file(path)
    try:
        with os.fdopen(handle, 'wb') as stream:
            stream.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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


class NoSpaceError(OSError):
    """Too little free space for an output (``errno.ENOSPC``)."""


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


def _clean_temp_files(out: str) -> List[str]:
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


# ---------------------------------------------------------------------------- output checks
def _existing_ancestor(directory: str) -> str:
    """The nearest existing ancestor of ``directory``; raises if a component is not a dir."""
    path = directory
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        raise NotADirectoryError(f'{path!r} is a file, not a directory: it cannot hold the '
                                 f'output directory {directory!r}')
    return path


def _limit(path: str, name: str, default: int) -> int:
    try:
        return os.pathconf(path, name)
    except (OSError, ValueError):
        return default


def check_output_path(out: str, inputs: Iterable[str], overwrite: bool,
                      what: str = 'the output', size_hint: Optional[int] = None,
                      clean_stale: bool = True) -> List[str]:
    """Refuse an output path that cannot be written, or would destroy an input or a file.

    Checked before any work: a trailing slash, ``out`` being an input, a directory, or an
    existing file (without ``overwrite``); its directory: a path component that is a file, not
    writable, a file name (or the temp name ``.<name>.<pid>.<random>.tmp`` derived from it) or
    path too long for the file system, and (with ``size_hint`` bytes) too little free space.
    Missing parent directories are allowed (the writers create them) when the nearest existing
    one is a writable directory.

    Args:
        out: the file about to be written.
        inputs: the files the tool reads (``out`` may be none of them).
        overwrite: allow replacing an existing ``out`` (the ``--overwrite`` flag).
        what: what is written, for the message (e.g. ``'the scales'``).
        size_hint: estimated size of the output in bytes, if known.
        clean_stale: look for leftover temp files of ``out`` and remove the stale ones.

    Returns:
        list of str: notes about leftover temp files found / removed (print them).

    Raises:
        ValueError: ``out`` is one of ``inputs``, is empty or ends with a slash; a name too long.
        IsADirectoryError: ``out`` is a directory.
        NotADirectoryError: a parent of ``out`` is a file.
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        PermissionError: the directory is not writable.
        NoSpaceError: too little free space for ``size_hint`` bytes.
    """
    out = os.fspath(out)
    if not out:
        raise ValueError(f'the path for {what} is empty; give a file name')
    if out.endswith(os.sep) or (os.altsep and out.endswith(os.altsep)):
        raise ValueError(f'output {out!r} ends with {out[-1]!r}, i.e. names a directory; '
                         f'give a file name for {what} (e.g. {out.rstrip("/")}/out.pth)')
    for path in inputs:
        if path and same_file(out, path):
            raise ValueError(f'output {out!r} is the same file as the input {path!r}; '
                             f'write {what} to another path')
    if os.path.isdir(out):
        raise IsADirectoryError(f'output {out!r} is a directory; give a file name')
    if os.path.lexists(out) and not overwrite:
        raise FileExistsError(f'output {out!r} exists; pass --overwrite to replace it')
    if os.path.lexists(out) and not os.path.isfile(out):
        raise ValueError(f'output {out!r} exists and is not a regular file (a broken link or a '
                         f'device); remove it or choose another path')
    directory = os.path.dirname(os.path.abspath(out))
    ancestor = _existing_ancestor(directory)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f'cannot write {what} to {out!r}: directory {ancestor!r} is not '
                              f'writable')
    name_max = _limit(ancestor, 'PC_NAME_MAX', 255)
    path_max = _limit(ancestor, 'PC_PATH_MAX', 4096)
    base = os.path.basename(out)
    overhead = len(os.fsencode(temp_name(out))) - len(os.fsencode(base))
    for name in (base, temp_name(out)):
        if len(os.fsencode(name)) > name_max:
            raise ValueError(f'output file name {base!r} is too long: its temp file '
                             f'{name[:24]}... has {len(os.fsencode(name))} bytes, the file '
                             f'system allows {name_max} (the name itself may have at most '
                             f'{name_max - overhead} bytes)')
    full = os.path.join(directory, temp_name(out))
    if len(os.fsencode(full)) >= path_max:
        raise ValueError(f'output path {out!r} is too long: {len(os.fsencode(full))} bytes with '
                         f'its temp name, the system allows {path_max - 1}')
    if size_hint is not None and size_hint > 0:
        free = shutil.disk_usage(ancestor).free
        needed = int(size_hint * SPACE_MARGIN) + SPACE_SLACK
        if free < needed:
            raise NoSpaceError(28, f'not enough free space for {what} in {ancestor!r}: about '
                              f'{needed / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free')
    return _clean_temp_files(out) if clean_stale and os.path.isdir(directory) else []


# --------------------------------------------------------------------------------- configs
class ConfigError(ValueError):
    """A config that cannot be read: missing, a syntax error, an unknown plugin, ..."""


def _assignment_line(path: str, name: str) -> Optional[int]:
    try:
        tree = ast.parse(open(path, encoding='utf-8').read())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return node.lineno
    return None


def _traceback_line(error: BaseException, path: str) -> Optional[int]:
    tb = error.__traceback__
    line = None
    real = os.path.realpath(path)
    while tb is not None:
        if os.path.realpath(tb.tb_frame.f_code.co_filename) == real:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def load_config_file(path: str, what: str = 'config'):
    """``mmengine.Config.fromfile(path)`` with one-line errors naming the file, line and cause.

    Checks the file itself first (exists, is a file, readable, UTF-8, valid Python syntax,
    for ``.py`` configs), so a typo is reported as ``config 'x.py', line 3: syntax error: ...``;
    a ``custom_imports`` module that cannot be imported is reported with the line of
    ``custom_imports``; a missing ``_base_`` file with the line of ``_base_``.

    Raises:
        ConfigError: any of the above.
    """
    from mmengine.config import Config
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(f'{what} {path!r} does not exist')
    if not os.path.isfile(path):
        raise ConfigError(f'{what} {path!r} is not a file')
    try:
        with open(path, encoding='utf-8') as stream:
            text = stream.read()
    except UnicodeDecodeError as error:
        raise ConfigError(f'{what} {path!r} is not UTF-8 text (byte {error.start})') from None
    except OSError as error:
        raise ConfigError(f'{what} {path!r} cannot be read: {error.strerror}') from None
    if path.endswith('.py'):
        try:
            compile(text, path, 'exec', dont_inherit=True)
        except SyntaxError as error:
            raise ConfigError(f'{what} {path!r}, line {error.lineno}: syntax error: '
                              f'{error.msg}') from None
        except ValueError as error:  # e.g. null bytes
            raise ConfigError(f'{what} {path!r}: not a Python file ({error})') from None
    try:
        return Config.fromfile(path)
    except ImportError as error:
        line = _assignment_line(path, 'custom_imports')
        where = f', line {line}' if line else ''
        missing, link = None, error  # mmengine re-raises without the module name: follow causes
        while link is not None and missing is None:
            missing = getattr(link, 'name', None)
            link = link.__cause__ or link.__context__
        if missing and (f"'{missing}'" in text or f'"{missing}"' in text):
            cause = f'custom_imports names module {missing!r}, which cannot be imported'
        elif missing:
            cause = f'a module imported through custom_imports needs {missing!r}, not installed'
        else:
            cause = f'custom_imports failed: {_first_line(str(error))}'
        raise ConfigError(f'{what} {path!r}{where}: {cause}; install the plugin or fix the '
                          f'module name') from None
    except FileNotFoundError as error:
        line = _assignment_line(path, '_base_')
        where = f', line {line}' if line else ''
        raise ConfigError(f'{what} {path!r}{where}: a base config is missing: '
                          f'{_first_line(str(error))}') from None
    except SyntaxError as error:  # a _base_ file with a syntax error (mmengine's message)
        raise ConfigError(f'{what} {path!r}: {_first_line(str(error))}') from None
    except Exception as error:  # noqa: BLE001 - executing the config's own code; re-raised
        line = _traceback_line(error, path)
        if line is None:
            raise
        raise ConfigError(f'{what} {path!r}, line {line}: {type(error).__name__}: '
                          f'{_first_line(str(error))}') from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else 'no detail'
