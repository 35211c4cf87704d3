"""Darknet's ``.weights`` files: the header and the arrays, read and written as Darknet does.

File format (``load_weights_upto`` / ``save_weights_upto`` in each fork's ``src/parser.c``), all
little-endian:

- ``int32 major, int32 minor, int32 revision``, then ``seen`` (images trained on): an unsigned 8-byte
  integer when ``major*10 + minor >= 2`` (pjreddie also requires ``major < 1000 and minor < 1000``),
  else 4 bytes. pjreddie's Darknet writes 0.2.0, AlexeyAB's 0.2.5, both with an 8-byte ``seen``.
  ``major > 1000 or minor > 1000`` marks a file whose ``[connected]`` weights are stored transposed.
- Then float32 arrays, layer after layer, in an order and with counts fixed by the cfg (see
  :func:`darknet_bn.darknet.model.Network.weights_layout`): no names, no sizes, no padding.

This module reads and writes that format given the list of arrays (:class:`ArraySpec`) the network
expects. Reading is one ``numpy.fromfile`` of the whole file; every array is a view into it (no copy,
no per-value Python loop), so a file loads about as fast as it can be read. A file that ends before
the last array raises :class:`DarknetWeightsError` naming the layer, the array and the missing bytes;
bytes after the last array raise it too unless ``allow_trailing=True``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DarknetWeightsError",
    "WeightsHeader",
    "ArraySpec",
    "WeightsData",
    "seen_bytes",
    "read_weights",
    "write_weights",
    "header_size",
]

_F32 = np.dtype("<f4")


class DarknetWeightsError(ValueError):
    """A ``.weights`` file that does not match its cfg (too short, too long, a bad header).

    Attributes:
        file: the file's name.
        problem: what is wrong, in words.
        layer: the layer index the problem is at, or ``None``.
        array: the array's name (``"weights"``, ``"input_layer.scales"``...), or ``None``.
        missing: how many bytes are missing (a truncated file), else 0.
    """

    def __init__(
        self, file: str, problem: str, layer: int | None = None, array: str | None = None, missing: int = 0
    ) -> None:
        self.file = file
        self.problem = problem
        self.layer = layer
        self.array = array
        self.missing = missing
        super().__init__(f"{file}: {problem}")


def _int32(v: int) -> int:
    """v wrapped to a C int (two's complement), as Darknet's int arithmetic does on x86."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def seen_bytes(major: int, minor: int, fork: str) -> int:
    """The size of ``seen`` in bytes (8 or 4) for a file of this version, by the fork's rule."""
    big = _int32(major * 10 + minor) >= 2
    if fork == "pjreddie":
        big = big and major < 1000 and minor < 1000
    elif fork != "alexeyab":
        raise ValueError(f"fork: expected 'pjreddie' or 'alexeyab', got {fork!r}")
    return 8 if big else 4


def header_size(seen_size: int) -> int:
    """Bytes in a header with a ``seen`` of this size: 12 + 4 or 12 + 8."""
    return 12 + seen_size


@dataclass(frozen=True)
class WeightsHeader:
    """A ``.weights`` header.

    Attributes:
        major, minor, revision: the format version (C ints).
        seen: images trained on (unsigned, 32 or 64 bits).
        seen_size: 4 or 8, the bytes ``seen`` takes in the file.
    """

    major: int
    minor: int
    revision: int
    seen: int = 0
    seen_size: int = 8

    def __post_init__(self) -> None:
        for name in ("major", "minor", "revision"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or not -(2**31) <= v < 2**31:
                raise ValueError(f"WeightsHeader.{name}: expected a C int, got {v!r}")
        if self.seen_size not in (4, 8):
            raise ValueError(f"WeightsHeader.seen_size: expected 4 or 8, got {self.seen_size!r}")
        if not isinstance(self.seen, (int, np.integer)) or not 0 <= self.seen < 1 << (8 * self.seen_size):
            raise ValueError(
                f"WeightsHeader.seen: expected an unsigned {8 * self.seen_size}-bit int, got {self.seen!r}"
            )

    @property
    def transpose(self) -> bool:
        """Whether ``[connected]`` weights are stored transposed (``major > 1000 or minor > 1000``)."""
        return self.major > 1000 or self.minor > 1000

    @property
    def nbytes(self) -> int:
        return header_size(self.seen_size)

    def to_bytes(self) -> bytes:
        """The header as Darknet writes it (little-endian)."""
        head = np.array([self.major, self.minor, self.revision], dtype="<i4").tobytes()
        return head + np.array([self.seen], dtype="<u8" if self.seen_size == 8 else "<u4").tobytes()

    @classmethod
    def for_fork(cls, fork: str, seen: int = 0) -> WeightsHeader:
        """The header the fork's ``save_weights`` writes: pjreddie 0.2.0, AlexeyAB 0.2.5, 8-byte seen."""
        if fork == "pjreddie":
            return cls(0, 2, 0, seen, 8)
        if fork == "alexeyab":
            return cls(0, 2, 5, seen, 8)
        raise ValueError(f"fork: expected 'pjreddie' or 'alexeyab', got {fork!r}")


@dataclass(frozen=True)
class ArraySpec:
    """One array of a ``.weights`` file: ``count`` float32 values of layer ``layer`` (of type
    ``layer_type``) called ``name``; ``key`` is the caller's handle for it (returned in
    :attr:`WeightsData.arrays`)."""

    key: Hashable
    layer: int
    layer_type: str
    name: str
    count: int

    @property
    def nbytes(self) -> int:
        return 4 * self.count

    def describe(self) -> str:
        return f"layer {self.layer} ({self.layer_type}) array '{self.name}' ({self.count} floats)"


@dataclass
class WeightsData:
    """What :func:`read_weights` returns: the header, ``arrays`` (``spec.key`` -> float32 array of
    ``spec.count`` values, file order, a view into one buffer holding the whole file), ``size`` (the
    file's bytes) and ``trailing`` (bytes after the last array, 0 unless allowed)."""

    header: WeightsHeader
    arrays: dict
    size: int
    trailing: int


def _read_all(path: str | os.PathLike) -> np.ndarray:
    """The whole file as a writable uint8 array, in one read."""
    return np.fromfile(os.fspath(path), dtype=np.uint8)


def read_weights(
    path: str | os.PathLike,
    layout: Sequence[ArraySpec],
    *,
    fork: str,
    allow_trailing: bool = False,
    name: str | None = None,
) -> WeightsData:
    """Read a ``.weights`` file: its header (``seen`` sized by the fork's rule) and the arrays of
    ``layout``, in order.

    Args:
        path: the file.
        layout: the arrays the file must hold, in file order.
        fork: ``"pjreddie"`` or ``"alexeyab"`` (the header rule differs for versions >= 1000).
        allow_trailing: accept bytes after the last array (they are counted in ``trailing``).
        name: the file's name in messages (default: the path).

    Returns:
        A :class:`WeightsData`; arrays are float32 views into the file's bytes.

    Raises:
        DarknetWeightsError: a short header, a file that ends before an array (naming the layer, the
            array and the bytes missing), or trailing bytes when not allowed.
        OSError: the file cannot be read.
    """
    fname = name if name is not None else os.fspath(path)
    buf = _read_all(path)
    size = int(buf.size)
    if size < 12:
        raise DarknetWeightsError(
            fname,
            f"the header needs at least 12 bytes (major, minor, revision), the file has {size}",
            missing=12 - size,
        )
    major, minor, revision = (int(v) for v in buf[:12].view("<i4"))
    ss = seen_bytes(major, minor, fork)
    if size < 12 + ss:
        raise DarknetWeightsError(
            fname,
            f"the header of version {major}.{minor}.{revision} needs {12 + ss} bytes "
            f"({ss}-byte seen), the file has {size}",
            missing=12 + ss - size,
        )
    seen = int(buf[12 : 12 + ss].view("<u8" if ss == 8 else "<u4")[0])
    header = WeightsHeader(major, minor, revision, seen, ss)
    offset = 12 + ss
    needed = offset + sum(s.nbytes for s in layout)
    arrays = {}
    native = sys.byteorder == "little"
    for spec in layout:
        end = offset + spec.nbytes
        if end > size:
            left = size - offset
            raise DarknetWeightsError(
                fname,
                f"ends early: {spec.describe()} needs {spec.nbytes} bytes at offset {offset}, "
                f"{left} left: {spec.nbytes - left} bytes missing (the file has {size} bytes, "
                f"the cfg needs {needed}: {needed - size} bytes short)",
                layer=spec.layer,
                array=spec.name,
                missing=needed - size,
            )
        a = buf[offset:end].view(_F32)
        arrays[spec.key] = a if native else a.astype(np.float32)
        offset = end
    trailing = size - offset
    if trailing and not allow_trailing:
        last = f" after {layout[-1].describe()}" if layout else " after the header"
        raise DarknetWeightsError(
            fname,
            f"{trailing} bytes follow the last array{last} (the cfg needs {offset} bytes, the file has "
            f"{size}): these weights do not match this cfg (allow_trailing=True, or --allow-trailing, ignores them)",
        )
    return WeightsData(header, arrays, size, trailing)


def write_weights(path: str | os.PathLike, header: WeightsHeader, layout: Sequence[ArraySpec], arrays: Mapping) -> int:
    """Write a ``.weights`` file: ``header``, then ``arrays[spec.key]`` for each spec of ``layout``
    as little-endian float32 (each must hold ``spec.count`` values). Returns the bytes written.

    Raises:
        ValueError: an array of the wrong size.
        OSError: the file cannot be written.
    """
    blobs = []
    for spec in layout:
        a = np.asarray(arrays[spec.key])
        if a.size != spec.count:
            raise ValueError(f"{spec.describe()}: has {a.size} values, the file layout needs {spec.count}")
        blobs.append(np.ascontiguousarray(a, dtype=_F32).reshape(-1))
    total = header.nbytes
    with open(os.fspath(path), "wb") as f:
        f.write(header.to_bytes())
        for b in blobs:
            f.write(b.data.cast("B"))
            total += b.nbytes
    return total
