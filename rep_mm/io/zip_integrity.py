"""Integrity of a checkpoint file: its format, and every zip member against its CRC-32.

``torch.load`` reads zip checkpoints (``torch.save``'s format since torch 1.6) without checking
their CRCs, so bytes changed inside a tensor record would load as other weights.
:func:`verify_zip_checkpoint` checks each member once, streaming it through a reused buffer, and
names the member that is cut, altered or misplaced.
"""
from __future__ import annotations

import mmap
import os
import struct
import zipfile
import zlib
from typing import Any, Optional, Union

from .errors import CheckpointError, first_line

__all__ = ['checkpoint_format', 'verify_zip_checkpoint', 'CRC_CHUNK']

ZIP_LOCAL_MAGIC = b'PK\x03\x04'
_LOCAL_HEADER = struct.Struct('<4s5H3I2H')  # signature ... name length, extra length (30 bytes)
CRC_CHUNK = 1 << 22  # 4 MiB
_DESCRIPTOR_MAGIC = b'PK\x07\x08'


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


def _member_name(name: bytes, flag_bits: int) -> str:
    return name.decode('utf-8' if flag_bits & 0x800 else 'cp437', 'replace')


def _cut_member(path: str, size: int) -> str:
    """Which zip member a file without its central directory was cut in.

    Walks the local headers from the start. torch writes each member's sizes in a data
    descriptor AFTER its bytes (flag bit 3), so the end of a member is found as the first
    ``PK\\x07\\x08`` descriptor whose compressed size equals the distance from the data start.
    """
    last = None
    with open(path, 'rb') as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        offset = 0
        while offset + _LOCAL_HEADER.size <= size:
            fields = _LOCAL_HEADER.unpack(mm[offset:offset + _LOCAL_HEADER.size])
            if fields[0] != ZIP_LOCAL_MAGIC:
                break
            flags, stored_size = fields[2], fields[7]
            name_start = offset + _LOCAL_HEADER.size
            name = _member_name(mm[name_start:name_start + fields[9]], flags)
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
        hit = mm.find(_DESCRIPTOR_MAGIC, position)
        if hit < 0:
            return None
        if hit + 16 <= size and struct.unpack('<I', mm[hit + 8:hit + 12])[0] == hit - start:
            return hit + 16
        if hit + 24 <= size and struct.unpack('<Q', mm[hit + 8:hit + 16])[0] == hit - start:
            return hit + 24  # zip64 descriptor
        position = hit + 1


def _member_start(raw: Any, info: zipfile.ZipInfo, size: int, where: str) -> int:
    """Check the local header of ``info`` against the central directory; its data offset."""
    raw.seek(info.header_offset)
    header = raw.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != ZIP_LOCAL_MAGIC:
        raise CheckpointError(f'{where}: no valid local header at byte {info.header_offset} '
                              f'(truncated or corrupted file)')
    fields = _LOCAL_HEADER.unpack(header)
    name = raw.read(fields[9])
    expected = info.orig_filename.encode('utf-8' if info.flag_bits & 0x800 else 'cp437')
    if name != expected:
        raise CheckpointError(f'{where}: its local header names '
                              f'{_member_name(name, fields[2])!r} (corrupted file)')
    start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
    if start + info.compress_size > size:
        raise CheckpointError(f'{where} is truncated: {max(size - start, 0)} of its '
                              f'{info.compress_size} bytes are in the file')
    return start


def _stored_crc(raw: Any, start: int, length: int, view: memoryview, where: str) -> int:
    """CRC-32 of ``length`` stored (uncompressed) bytes from ``start``, read into ``view``."""
    raw.seek(start)
    crc, remaining, chunk = 0, length, len(view)
    while remaining:
        got = raw.readinto(view[:min(chunk, remaining)])
        if not got:
            raise CheckpointError(f'{where} is truncated ({remaining} bytes missing)')
        crc = zlib.crc32(view[:got], crc)
        remaining -= got
    return crc


def _compressed_crc(archive: zipfile.ZipFile, info: zipfile.ZipInfo, chunk: int,
                    where: str) -> int:
    """CRC-32 of a compressed member's data (torch stores; other writers may compress)."""
    crc = 0
    try:
        with archive.open(info) as stream:
            while True:
                data = stream.read(chunk)
                if not data:
                    return crc
                crc = zlib.crc32(data, crc)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise CheckpointError(f'{where} is corrupted: {error}') from None


def verify_zip_checkpoint(path: Union[str, os.PathLike], chunk: int = CRC_CHUNK) -> int:
    """Check every member of a zip checkpoint against the CRC-32 and size in its directory.

    Streams each member once (a reused buffer, ``zlib.crc32``), checks the local header
    against the central directory (signature, name), and that no member reaches past the end
    of the file.

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
            f'unreadable ({first_line(str(error))}); {_cut_member(path, size)}') from None
    view = memoryview(bytearray(chunk))
    with archive, open(path, 'rb', buffering=0) as raw:
        members = archive.infolist()
        for info in members:
            where = f'checkpoint {path!r}, zip member {info.filename!r}'
            start = _member_start(raw, info, size, where)
            if info.compress_type == zipfile.ZIP_STORED:
                crc = _stored_crc(raw, start, info.file_size, view, where)
            else:
                crc = _compressed_crc(archive, info, chunk, where)
            if crc != info.CRC:
                raise CheckpointError(
                    f'{where} fails its CRC-32 check (directory {info.CRC:08x}, data '
                    f'{crc:08x}): its bytes were changed after saving; re-download or re-save it')
    return len(members)
