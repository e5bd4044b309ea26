"""Checkpoint I/O: safe loading, official / mmpretrain key maps, strict loading, atomic saving.

rep_mm keeps the names of the official code (RepVGG: ``stage0..stage4``, ``rbr_dense``,
``rbr_1x1``, ``rbr_identity``, ``rbr_reparam``, ``se.down``/``se.up``, ``post_se``; RepMLPNet:
``conv_embedding``, ``stages``, ``embeds``, ``gp.fc1``, ``prebn1``, ``head_norm``), so an
official release loads as is; mmpretrain's names (RepVGG: ``stem``, ``stage_1``, ``branch_3x3``,
``branch_norm``, ``se_layer.conv1.conv``; RepMLPNet: ``patch_embed``, ``gp.conv1.conv``,
``norm1``, ``downsample_layers``, ``final_norm``) are mapped explicitly, and every key that does
not find its place is reported.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import re
import struct
import warnings
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

__all__ = ['CheckpointError', 'LoadReport', 'load_checkpoint_file', 'verify_zip_checkpoint',
           'checkpoint_format', 'runner_allow_list',
           'extract_state_dict', 'detect_kind', 'mmpretrain_to_official', 'load_weights',
           'save_checkpoint_atomic']

KINDS = ('auto', 'official', 'mmpretrain', 'rep_mm')
TARGETS = ('auto', 'backbone', 'model')
WRAPPER_KEYS = ('state_dict', 'model', 'module')
# classifier parts of the official full models; in an mm model they belong to the head
OFFICIAL_HEAD_PREFIXES = ('linear.', 'stage1_aux.', 'stage2_aux.', 'stage3_first_aux.',
                          'head.')  # head.* is RepMLPNet's classifier
MAX_LISTED = 10

# mmpretrain RepVGG (backbone-relative key) -> official name, applied in this order
_MMPRETRAIN_RULES = (
    (re.compile(r'^stem\.'), 'stage0.'),
    (re.compile(r'^stage_(\d+)\.'), r'stage\1.'),
    (re.compile(r'\.branch_3x3\.norm\.'), '.rbr_dense.bn.'),
    (re.compile(r'\.branch_1x1\.norm\.'), '.rbr_1x1.bn.'),
    (re.compile(r'\.branch_3x3\.'), '.rbr_dense.'),
    (re.compile(r'\.branch_1x1\.'), '.rbr_1x1.'),
    (re.compile(r'\.branch_norm\.'), '.rbr_identity.'),
    (re.compile(r'\.branch_reparam\.'), '.rbr_reparam.'),
    (re.compile(r'\.se_layer\.conv1\.conv\.'), '.se.down.'),
    (re.compile(r'\.se_layer\.conv2\.conv\.'), '.se.up.'),
    # mmpretrain RepMLPNet
    (re.compile(r'^patch_embed\.projection\.'), 'conv_embedding.conv.'),
    (re.compile(r'^patch_embed\.norm\.'), 'conv_embedding.bn.'),
    (re.compile(r'\.gp\.conv1\.conv\.'), '.gp.fc1.'),
    (re.compile(r'\.gp\.conv2\.conv\.'), '.gp.fc2.'),
    (re.compile(r'^(stages\.\d+\.\d+)\.norm([12])\.'), r'\1.prebn\2.'),
    (re.compile(r'^downsample_layers\.'), 'embeds.'),
    (re.compile(r'^final_norm\.'), 'head_norm.'),
)
_MMPRETRAIN_MARKERS = re.compile(
    r'^(stem|stage_\d+|patch_embed|downsample_layers|final_norm)\.|'
    r'\.(branch_3x3|branch_1x1|branch_norm|branch_reparam)\.')
_OFFICIAL_TOP = re.compile(r'^(stage\d+|stage3_first|stage3_second|linear|stage1_aux|'
                           r'stage2_aux|stage3_first_aux|conv_embedding|stages|embeds|head_norm|'
                           r'head)\.')


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose keys do not fit the model."""


# ------------------------------------------------------------------------------------ loading
_HISTORY_BUFFER_METHODS = ('min', 'max', 'mean', 'current')


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


# ------------------------------------------------------------------------------ integrity
ZIP_LOCAL_MAGIC = b'PK\x03\x04'
_LOCAL_HEADER = struct.Struct('<4s5H3I2H')  # signature ... name length, extra length (30 bytes)
CRC_CHUNK = 1 << 22  # 4 MiB


def checkpoint_format(path: str) -> str:
    """``'zip'`` (``torch.save`` since torch 1.6), ``'legacy'`` (the older pickle stream that
    starts with a pickle PROTO opcode) or ``'unknown'``, from the file's first bytes."""
    with open(path, 'rb') as stream:
        head = stream.read(4)
    if head == ZIP_LOCAL_MAGIC:
        return 'zip'
    if head[:1] == b'\x80':
        return 'legacy'
    return 'zip' if zipfile.is_zipfile(path) else 'unknown'


def _member_bytes(name: bytes, flag_bits: int) -> str:
    return name.decode('utf-8' if flag_bits & 0x800 else 'cp437', 'replace')


def _cut_member(path: str, size: int) -> str:
    """Which zip member a file without its central directory was cut in.

    Walks the local headers from the start. torch writes each member's sizes in a data
    descriptor AFTER its bytes (flag bit 3), so the end of a member is found as the first
    ``PK\\x07\\x08`` descriptor whose compressed size equals the distance from the data start.
    """
    import mmap
    last = None
    with open(path, 'rb') as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        offset = 0
        while offset + _LOCAL_HEADER.size <= size:
            fields = _LOCAL_HEADER.unpack(mm[offset:offset + _LOCAL_HEADER.size])
            if fields[0] != ZIP_LOCAL_MAGIC:
                break
            flags, stored_size = fields[2], fields[7]
            name_start = offset + _LOCAL_HEADER.size
            name = _member_bytes(mm[name_start:name_start + fields[9]], flags)
            start = name_start + fields[9] + fields[10]
            if not flags & 0x08:
                end = start + stored_size
                if end > size:
                    return (f'zip member {name!r} is cut: {max(size - start, 0)} of its '
                            f'{stored_size} bytes are present')
            else:
                end = _descriptor_end(mm, start, size)
                if end is None:
                    return (f'zip member {name!r} is cut: {max(size - start, 0)} of its bytes '
                            f'are present, its end (data descriptor) is missing')
            last, offset = name, end
    if last is None:
        return 'no zip member is readable'
    return f'all members up to {last!r} are complete; the central directory at the end is missing'


def _descriptor_end(mm: Any, start: int, size: int) -> Optional[int]:
    """The offset after the data descriptor of the member whose data starts at ``start``."""
    position = start
    while True:
        hit = mm.find(b'PK\x07\x08', position)
        if hit < 0:
            return None
        if hit + 16 <= size and struct.unpack('<I', mm[hit + 8:hit + 12])[0] == hit - start:
            return hit + 16
        if hit + 24 <= size and struct.unpack('<Q', mm[hit + 8:hit + 16])[0] == hit - start:
            return hit + 24  # zip64 descriptor
        position = hit + 1


def verify_zip_checkpoint(path: Union[str, os.PathLike], chunk: int = CRC_CHUNK) -> int:
    """Check every member of a zip checkpoint against the CRC-32 and size in its directory.

    ``torch.load`` reads zip checkpoints without checking CRCs, so bytes changed inside a
    tensor record load as different weights. This streams each member once (a reused buffer,
    ``zlib.crc32``), checks the local header against the central directory (signature, name),
    and that no member reaches past the end of the file.

    Returns:
        int: the number of members checked.

    Raises:
        CheckpointError: naming the file and the zip member (truncated, altered, or a damaged
            zip structure).
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as error:
        raise CheckpointError(
            f'checkpoint {path!r} is truncated or corrupted: its zip central directory is '
            f'unreadable ({_first_line(str(error))}); {_cut_member(path, size)}') from None
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with archive, open(path, 'rb', buffering=0) as raw:
        members = archive.infolist()
        for info in members:
            where = f'checkpoint {path!r}, zip member {info.filename!r}'
            raw.seek(info.header_offset)
            header = raw.read(_LOCAL_HEADER.size)
            if len(header) < _LOCAL_HEADER.size or header[:4] != ZIP_LOCAL_MAGIC:
                raise CheckpointError(f'{where}: no valid local header at byte '
                                      f'{info.header_offset} (truncated or corrupted file)')
            fields = _LOCAL_HEADER.unpack(header)
            name = raw.read(fields[9])
            expected = info.orig_filename.encode('utf-8' if info.flag_bits & 0x800 else 'cp437')
            if name != expected:
                raise CheckpointError(f'{where}: its local header names '
                                      f'{_member_bytes(name, fields[2])!r} (corrupted file)')
            start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
            if start + info.compress_size > size:
                raise CheckpointError(
                    f'{where} is truncated: {max(size - start, 0)} of its {info.compress_size} '
                    f'bytes are in the file')
            crc = 0
            if info.compress_type == zipfile.ZIP_STORED:
                raw.seek(start)
                remaining = info.file_size
                while remaining:
                    got = raw.readinto(view[:min(chunk, remaining)])
                    if not got:
                        raise CheckpointError(f'{where} is truncated ({remaining} bytes missing)')
                    crc = zlib.crc32(view[:got], crc)
                    remaining -= got
            else:  # torch writes stored members; other writers may compress
                try:
                    with archive.open(info) as stream:
                        while True:
                            data = stream.read(chunk)
                            if not data:
                                break
                            crc = zlib.crc32(data, crc)
                except (zipfile.BadZipFile, zlib.error, EOFError) as error:
                    raise CheckpointError(f'{where} is corrupted: {error}') from None
            if crc != info.CRC:
                raise CheckpointError(
                    f'{where} fails its CRC-32 check (directory {info.CRC:08x}, data '
                    f'{crc:08x}): its bytes were changed after saving; re-download or re-save it')
    return len(members)


_LEGACY_NOTE = ('legacy (non-zip) torch format: it holds no checksums, so only its structure is '
                'checked (magic number, protocol, pickle framing, every storage record\'s size, '
                'no bytes after the last record); re-save it with torch.save (zip format) to get '
                'CRC checks')


def load_checkpoint_file(path: Union[str, os.PathLike], allow_unsafe: bool = False,
                         verify: bool = True) -> Any:
    """Read a checkpoint file on the CPU with ``weights_only=True`` (or fully, if told to).

    Runner checkpoints (a MessageHub and numpy objects in ``meta``) load through a fixed
    allow-list (:func:`runner_safe_globals`, active only during this call).

    Integrity (``verify=True``): a zip checkpoint (``torch.save``'s format) has every member
    checked against its CRC-32 first (:func:`verify_zip_checkpoint`; torch.load checks none).
    A legacy (non-zip) file has no checksums: torch checks its magic number, protocol and each
    storage record's size, and here the whole file must be consumed (no trailing bytes); bytes
    changed inside a storage record cannot be detected (a warning says so).

    Args:
        path: the file.
        allow_unsafe: unpickle everything (``weights_only=False``): only for files you trust.
        verify: run the integrity checks above (default).

    Raises:
        CheckpointError: the file is missing, not a file, truncated / corrupted (the message
            names the zip member), or needs globals outside the allow-list (named).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f'checkpoint {path!r} does not exist')
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint {path!r} is not a file')
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f'checkpoint {path!r} is empty (0 bytes)')
    if not os.access(path, os.R_OK):
        raise CheckpointError(f'checkpoint {path!r} is not readable (permission denied)')
    form = checkpoint_format(path)
    if verify and form == 'zip':
        verify_zip_checkpoint(path)
    end = size
    try:
        with contextlib.ExitStack() as stack:
            # a zip is read by path (torch's own reader); a legacy stream through a file
            # object, so that its end position can be checked
            source: Any = path if form == 'zip' else stack.enter_context(open(path, 'rb'))
            if not allow_unsafe:
                stack.enter_context(runner_allow_list())
            result = torch.load(source, map_location='cpu', weights_only=not allow_unsafe)
            if form != 'zip':
                end = source.tell()
    except pickle.UnpicklingError as error:
        text = str(error)
        if 'global' in text.lower() or 'getattr' in text or 'allowlist' in text.lower():
            raise CheckpointError(
                f'checkpoint {path!r} needs Python objects outside the safe allow-list '
                f'({_unsafe_detail(path, text)}). If you trust this file, load it with '
                f'allow_unsafe=True (CLI: --unsafe-load)') from error
        raise CheckpointError(f'checkpoint {path!r} is corrupted: {_first_line(text)}') from error
    except (EOFError, zipfile.BadZipFile, RuntimeError, ValueError, TypeError, KeyError,
            AttributeError, IndexError, OSError, struct.error, UnicodeDecodeError) as error:
        raise CheckpointError(f'checkpoint {path!r} is truncated or corrupted: '
                              f'{type(error).__name__}: {_first_line(str(error))}') from error
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
    return hits[0] if hits else _first_line(text)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else 'no detail'


def extract_state_dict(obj: Any) -> 'OrderedDict[str, Tensor]':
    """The state dict inside a loaded checkpoint, with a DDP ``module.`` prefix removed.

    Accepts a raw state dict or one wrapped in ``{'state_dict': ...}``, ``{'model': ...}`` or
    ``{'module': ...}`` (also nested).
    """
    for _ in range(4):
        if not isinstance(obj, Mapping):
            break
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is None:
            break
        obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'expected a state dict (a dict of tensors, possibly under '
                              f'{list(WRAPPER_KEYS)}), got {type(obj).__name__}')
    if not obj:
        raise CheckpointError('the checkpoint holds an empty state dict')
    bad = [f'{k!r} ({type(v).__name__})' for k, v in obj.items()
           if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f'not a state dict: {len(bad)} entr(y/ies) are not str -> Tensor, '
                              f'e.g. {", ".join(bad[:5])}; top-level keys: {list(obj)[:8]}')
    if all(k.startswith('module.') for k in obj):
        return OrderedDict((k[len('module.'):], v) for k, v in obj.items())
    return OrderedDict(obj)


# ---------------------------------------------------------------------------------- key maps
def detect_kind(state_dict: Mapping[str, Tensor]) -> str:
    """``'mmpretrain'``, ``'official'`` or ``'rep_mm'``: which naming scheme the keys use."""
    keys = list(state_dict)
    backbone_keys = [k[len('backbone.'):] for k in keys if k.startswith('backbone.')]
    if any(_MMPRETRAIN_MARKERS.search(k) for k in backbone_keys or keys):
        return 'mmpretrain'
    if all(_OFFICIAL_TOP.match(k) for k in keys):
        return 'official'
    return 'rep_mm'


def mmpretrain_to_official(key: str) -> str:
    """Map one backbone-relative mmpretrain RepVGG / RepMLPNet key to the official name."""
    for pattern, replacement in _MMPRETRAIN_RULES:
        key = pattern.sub(replacement, key)
    return key


@dataclass
class _Split:
    backbone: Dict[str, Tensor] = field(default_factory=OrderedDict)  # backbone-relative
    official_head: Dict[str, Tensor] = field(default_factory=OrderedDict)  # linear., *_aux.
    other: Dict[str, Tensor] = field(default_factory=OrderedDict)  # mm-model names (head., neck.)


def _split(state_dict: Mapping[str, Tensor], kind: str) -> _Split:
    parts = _Split()
    if kind == 'official':
        for key, value in state_dict.items():
            target = parts.official_head if key.startswith(OFFICIAL_HEAD_PREFIXES) else \
                parts.backbone
            target[key] = value
        return parts
    prefixed = any(k.startswith('backbone.') for k in state_dict)
    for key, value in state_dict.items():
        if prefixed and not key.startswith('backbone.'):
            parts.other[key] = value
            continue
        key = key[len('backbone.'):] if prefixed else key
        parts.backbone[mmpretrain_to_official(key) if kind == 'mmpretrain' else key] = value
    return parts


def _resolve_target(model: nn.Module, target: str) -> Tuple[nn.Module, str]:
    if target not in TARGETS:
        raise ValueError(f'target must be one of {TARGETS}, got {target!r}')
    has_backbone = isinstance(getattr(model, 'backbone', None), nn.Module)
    if target == 'auto':
        target = 'model' if has_backbone else 'backbone'
    if target == 'backbone' and has_backbone:
        return model.backbone, target
    return model, target


def _map_to_model(parts: _Split, target: str, has_backbone: bool,
                  model_keys: List[str]) -> Tuple[Dict[str, Tensor], List[str]]:
    """Checkpoint entries under the target module's names, and the keys deliberately skipped."""
    if target == 'backbone' or not has_backbone:
        skipped = list(parts.official_head) + list(parts.other)
        return OrderedDict(parts.backbone), skipped
    mapped: Dict[str, Tensor] = OrderedDict(('backbone.' + k, v) for k, v in parts.backbone.items())
    names = set(model_keys)
    for key, value in parts.official_head.items():
        if key.startswith(('linear.', 'head.')):
            rest = key.split('.', 1)[1]
            key = 'head.linear.' + rest if 'head.linear.' + rest in names else 'head.fc.' + rest
        else:
            key = 'head.' + key
        mapped[key] = value
    mapped.update(parts.other)
    return mapped, []


# ----------------------------------------------------------------------------- strict loading
@dataclass
class LoadReport:
    """What :func:`load_weights` found: the scheme, and every key that did not fit."""

    kind: str
    target: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape_mismatch: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(
        default_factory=list)
    skipped: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self) -> str:
        lines = [f'{len(self.loaded)} tensor(s) loaded ({self.kind} names -> {self.target})']
        if self.skipped:
            lines.append(f'{len(self.skipped)} key(s) not for this target, skipped: '
                         f'{_listing(self.skipped)}')
        for title, keys in (('missing in the checkpoint', self.missing),
                            ('unexpected (not in the model)', self.unexpected)):
            if keys:
                lines.append(f'{len(keys)} key(s) {title}: {_listing(keys)}')
        if self.shape_mismatch:
            items = [f'{k}: checkpoint {list(a)} vs model {list(b)}'
                     for k, a, b in self.shape_mismatch]
            lines.append(f'{len(items)} shape mismatch(es): {_listing(items)}')
        return '\n  '.join(lines)


def _listing(items: List[str]) -> str:
    shown = ', '.join(items[:MAX_LISTED])
    return shown + (f', ... (+{len(items) - MAX_LISTED} more)' if len(items) > MAX_LISTED else '')


def _check_form(provided: List[str], expected: List[str]) -> None:
    def form(keys: List[str]) -> Optional[str]:
        deploy = any('.rbr_reparam.' in k or k.startswith('rbr_reparam.') for k in keys)
        train = any('.rbr_dense.' in k or k.startswith('rbr_dense.') for k in keys)
        return 'deploy' if deploy and not train else 'training' if train and not deploy else None

    ckpt, model = form(provided), form(expected)
    if ckpt == 'deploy' and model == 'training':
        raise CheckpointError(
            'checkpoint is in deploy form (rbr_reparam keys) but the model is in training form '
            '(rbr_dense / rbr_1x1 / rbr_identity): build it with deploy=True or convert the '
            'model first (rep_mm.reparameterize)')
    if ckpt == 'training' and model == 'deploy':
        raise CheckpointError(
            'checkpoint is in training form (rbr_dense / rbr_1x1 / rbr_identity keys) but the '
            'model is in deploy form (rbr_reparam): build it with deploy=False, load, then '
            'convert (rep_mm.reparameterize or `rep-mm convert`)')


def load_weights(model: nn.Module, source: Union[str, os.PathLike, Mapping[str, Any]],
                 kind: str = 'auto', strict: bool = True, target: str = 'auto',
                 allow_unsafe: bool = False) -> LoadReport:
    """Load a checkpoint (file or dict) into a rep_mm backbone or a whole mm model.

    Args:
        model: a rep_mm backbone, or an mm model with a ``backbone`` (classifier, segmentor,
            detector).
        source: a checkpoint path, a loaded checkpoint or a state dict (any wrapping accepted
            by :func:`extract_state_dict`).
        kind: naming scheme of the checkpoint: ``'official'`` (the original repos' full models,
            ``linear.*`` = classifier), ``'mmpretrain'`` (its RepVGG classifier or backbone),
            ``'rep_mm'`` (a rep_mm model's own state dict), or ``'auto'`` to detect it.
        strict: raise on any missing / unexpected / shape-mismatched key (default); otherwise
            load what fits and return the report.
        target: ``'backbone'`` (``model.backbone`` if the model has one, else ``model``; head
            keys of the checkpoint are skipped), ``'model'`` (the whole mm model: official
            ``linear.*`` goes to ``head.fc.*``, or to ``head.linear.*`` for the RepVGGplus head,
            ``*_aux.*`` to ``head.*_aux.*``) or ``'auto'`` (``'model'`` when there is a
            backbone attribute).
        allow_unsafe: passed to :func:`load_checkpoint_file` for a path ``source``.

    Returns:
        LoadReport: loaded / missing / unexpected / shape-mismatched / skipped keys.

    Raises:
        CheckpointError: unreadable file; a deploy-form checkpoint for a training-form model or
            the reverse; with ``strict``, any key that does not fit (up to 10 of each listed).
    """
    if kind not in KINDS:
        raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
    if isinstance(source, (str, os.PathLike)):
        source = load_checkpoint_file(source, allow_unsafe=allow_unsafe)
    state_dict = extract_state_dict(source)
    kind = detect_kind(state_dict) if kind == 'auto' else kind
    module, target = _resolve_target(model, target)
    has_backbone = isinstance(getattr(module, 'backbone', None), nn.Module)
    expected = module.state_dict()
    provided, skipped = _map_to_model(_split(state_dict, kind), target, has_backbone,
                                      list(expected))
    _check_form(list(provided), list(expected))

    report = LoadReport(kind=kind, target=target, skipped=skipped)
    report.missing = [k for k in expected if k not in provided]
    report.unexpected = [k for k in provided if k not in expected]
    loadable = OrderedDict()
    for key, value in provided.items():
        if key not in expected:
            continue
        if tuple(value.shape) != tuple(expected[key].shape):
            report.shape_mismatch.append((key, tuple(value.shape), tuple(expected[key].shape)))
        else:
            loadable[key] = value
    if strict and not report.ok:
        raise CheckpointError(f'checkpoint does not fit {type(module).__name__} '
                              f'(strict=True):\n  {report.summary()}')
    module.load_state_dict(loadable, strict=False)
    report.loaded = list(loadable)
    return report


# ------------------------------------------------------------------------------------ saving
def save_checkpoint_atomic(obj: Any, path: Union[str, os.PathLike], overwrite: bool = False) -> str:
    """``torch.save`` to a temp file in the same directory, fsync, then move it into place.

    The temp file is ``.<name>.<pid>.<random>.tmp`` (:func:`rep_mm.io.files.make_temp_file`), so
    a leftover of a killed run can be recognised as stale (:func:`rep_mm.io.files.check_output_path`).

    Never leaves a partial file: on any error the temp file is removed and ``path`` is
    untouched. Refuses to replace an existing ``path`` unless ``overwrite=True``.

    Returns:
        str: the path written.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f'output {path!r} is a directory; give a file name')
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f'output {path!r} exists; pass overwrite=True (CLI: --overwrite) '
                              f'to replace it')
    os.makedirs(directory, exist_ok=True)
    from .files import make_temp_file
    handle, tmp = make_temp_file(path)  # .<name>.<pid>.<random>.tmp: see rep_mm.io.files
    try:
        with os.fdopen(handle, 'wb') as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_no_replace(tmp, path)
        _fsync_directory(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _move_no_replace(tmp: str, path: str) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (a hard link fails atomically if so)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f'output {path!r} appeared while saving; not replaced') from None
    except OSError:  # file systems without hard links
        if os.path.lexists(path):
            raise FileExistsError(f'output {path!r} appeared while saving; not replaced')
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
