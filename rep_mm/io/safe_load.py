"""Reading a checkpoint file safely: ``weights_only=True`` with the Runner allow-list.

An mmengine Runner checkpoint pickles a MessageHub (``HistoryBuffer``) and numpy objects in its
``meta``; :func:`runner_safe_globals` lists exactly those globals, :func:`runner_allow_list`
allows them for a while (nesting correctly), and :func:`load_checkpoint_file` reads a file with
them after checking its integrity (:mod:`.zip_integrity`). ``allow_unsafe=True`` (CLI:
``--unsafe-load``) unpickles everything, for trusted files only.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import struct
import warnings
import zipfile
from typing import Any, Iterator, List, Mapping, Tuple, Union

import torch

from .errors import CheckpointError, first_line
from .zip_integrity import checkpoint_format, verify_zip_checkpoint

__all__ = ['runner_safe_globals', 'runner_allow_list', 'load_checkpoint_file', 'read_checkpoint']

_HISTORY_BUFFER_METHODS = ('min', 'max', 'mean', 'current')
_LEGACY_NOTE = ('legacy (non-zip) torch format: it holds no checksums, so only its structure is '
                'checked (magic number, protocol, pickle framing, every storage record\'s size, '
                'no bytes after the last record); re-save it with torch.save (zip format) to get '
                'CRC checks')
_READ_ERRORS = (EOFError, zipfile.BadZipFile, RuntimeError, ValueError, TypeError, KeyError,
                AttributeError, IndexError, OSError, struct.error, UnicodeDecodeError)


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """The only ``getattr`` a Runner checkpoint needs: HistoryBuffer's own statistics methods.

    mmengine pickles ``HistoryBuffer._statistics_methods`` as ``getattr(HistoryBuffer, 'min')``
    etc.; any other attribute lookup is refused, so the allow-list stays closed.
    """
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    allowed = ', '.join(f'HistoryBuffer.{m}' for m in _HISTORY_BUFFER_METHODS)
    raise pickle.UnpicklingError(f'refused getattr({obj!r}, {name!r}): only {allowed} may be '
                                 f'looked up while loading with weights_only=True')


def runner_safe_globals() -> List[Any]:
    """The exact globals an mmengine Runner checkpoint (MessageHub, numpy in ``meta``) needs."""
    import numpy as np
    from mmengine.logging import HistoryBuffer

    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    allowed: List[Any] = [HistoryBuffer, np.ndarray, np.dtype,
                          (_history_buffer_getattr, 'builtins.getattr')]
    for name in ('_reconstruct', 'scalar'):  # numpy 2 and numpy 1 module paths
        allowed += [(getattr(multiarray, name), f'numpy._core.multiarray.{name}'),
                    (getattr(multiarray, name), f'numpy.core.multiarray.{name}')]
    dtypes = getattr(np, 'dtypes', None)
    for name in ('Float64DType', 'Float32DType', 'Int64DType', 'Int32DType', 'BoolDType'):
        if dtypes is not None and hasattr(dtypes, name):
            allowed.append(getattr(dtypes, name))
    return allowed


@contextlib.contextmanager
def runner_allow_list() -> Iterator[None]:
    """Allow exactly :func:`runner_safe_globals` in ``torch.load(weights_only=True)`` meanwhile.

    Unlike ``torch.serialization.safe_globals``, this nests: torch's context removes its
    entries on exit even when an enclosing context had added the same ones, so a checkpoint
    (or scales file) read inside ``tools/train.py``'s context would switch the allow-list off
    for the Runner's own resume. Here only the entries this context added are removed.
    """
    present = torch.serialization.get_safe_globals()
    added = [item for item in runner_safe_globals() if item not in present]
    torch.serialization.add_safe_globals(added)
    try:
        yield
    finally:
        remaining = [item for item in torch.serialization.get_safe_globals()
                     if item not in added]
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(remaining)


def _checked_size(path: str) -> int:
    """The size of the checkpoint file ``path``; raises if it is missing, empty or unreadable."""
    if not os.path.exists(path):
        raise CheckpointError(f'checkpoint {path!r} does not exist')
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint {path!r} is not a file')
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f'checkpoint {path!r} is empty (0 bytes)')
    if not os.access(path, os.R_OK):
        raise CheckpointError(f'checkpoint {path!r} is not readable (permission denied)')
    return size


def _torch_load(path: str, form: str, allow_unsafe: bool) -> Tuple[Any, int]:
    """``torch.load`` on the CPU; returns the object and, for a legacy stream, the offset at
    which reading stopped (a zip is read by path with torch's own reader, its end unknown)."""
    try:
        with contextlib.ExitStack() as stack:
            source: Any = path if form == 'zip' else stack.enter_context(open(path, 'rb'))
            if not allow_unsafe:
                stack.enter_context(runner_allow_list())
            result = torch.load(source, map_location='cpu', weights_only=not allow_unsafe)
            return result, (-1 if form == 'zip' else source.tell())
    except pickle.UnpicklingError as error:
        text = str(error)
        if 'global' in text.lower() or 'getattr' in text or 'allowlist' in text.lower():
            raise CheckpointError(
                f'checkpoint {path!r} needs Python objects outside the safe allow-list '
                f'({_unsafe_detail(path, text)}). If you trust this file, load it with '
                f'allow_unsafe=True (CLI: --unsafe-load)') from error
        raise CheckpointError(f'checkpoint {path!r} is corrupted: {first_line(text)}') from error
    except _READ_ERRORS as error:
        raise CheckpointError(f'checkpoint {path!r} is truncated or corrupted: '
                              f'{type(error).__name__}: {first_line(str(error))}') from error


def load_checkpoint_file(path: Union[str, os.PathLike], allow_unsafe: bool = False,
                         verify: bool = True) -> Any:
    """Read a checkpoint file on the CPU with ``weights_only=True`` (or fully, if told to).

    Runner checkpoints (a MessageHub and numpy objects in ``meta``) load through a fixed
    allow-list (:func:`runner_safe_globals`, active only during this call).

    Integrity (``verify=True``): a zip checkpoint (``torch.save``'s format) has every member
    checked against its CRC-32 first (:func:`~rep_mm.io.verify_zip_checkpoint`; torch.load
    checks none). A legacy (non-zip) file has no checksums: torch checks its magic number,
    protocol and each storage record's size, and here the whole file must be consumed (no
    trailing bytes); bytes changed inside a storage record cannot be detected (a warning says
    so).

    Args:
        path: the file.
        allow_unsafe: unpickle everything (``weights_only=False``): only for files you trust.
        verify: run the integrity checks above (default).

    Raises:
        CheckpointError: the file is missing, not a file, truncated / corrupted (the message
            names the zip member), or needs globals outside the allow-list (named).
    """
    path = os.fspath(path)
    size = _checked_size(path)
    form = checkpoint_format(path)
    if verify and form == 'zip':
        verify_zip_checkpoint(path)
    result, end = _torch_load(path, form, allow_unsafe)
    if verify and form != 'zip':
        if end != size:
            raise CheckpointError(f'checkpoint {path!r} is corrupted: {size - end} unexpected '
                                  f'byte(s) after the last storage record ({_LEGACY_NOTE})')
        warnings.warn(f'checkpoint {path!r}: {_LEGACY_NOTE}', stacklevel=2)
    return result


def _unsafe_detail(path: str, text: str) -> str:
    """The globals of ``path`` outside the allow-list, or the unpickler's key sentence."""
    for line in text.splitlines():
        if 'refused getattr' in line:
            return line.strip()
    allowed = set()
    for item in runner_safe_globals():
        obj, name = item if isinstance(item, tuple) else (item, None)
        allowed.add(name or f'{obj.__module__}.{obj.__qualname__}')
    try:
        unsafe = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path)
                  if g not in allowed]
    except Exception:  # noqa: BLE001 - only for the message
        unsafe = []
    if unsafe:
        return 'unsupported globals: ' + ', '.join(sorted(unsafe))
    hits = [line.strip() for line in text.splitlines() if 'Unsupported global' in line]
    return hits[0] if hits else first_line(text)


def read_checkpoint(source: Union[str, os.PathLike, Mapping[str, Any]],
                    allow_unsafe: bool = False) -> Any:
    """A path read by :func:`load_checkpoint_file`; an already loaded checkpoint as it is."""
    if isinstance(source, (str, os.PathLike)):
        return load_checkpoint_file(source, allow_unsafe=allow_unsafe)
    return source
