"""Wire format between the trusted grader and a worker.

A message is one frame: an 8-byte header (JSON length, number of array blobs), the JSON
document, then each blob as an 8-byte length and ``.npy`` bytes. Only JSON and ``.npy``
written and read with ``allow_pickle=False`` cross the boundary; nothing is ever unpickled
or evaluated. Every length is bounded *before* anything is allocated, so a hostile worker
cannot make the grader read an unbounded message.

Plain values are encoded as JSON with a few tagged objects:
``{"$nd": i}`` (the i-th array blob), ``{"$tuple": [...]}``, ``{"$handle": id}`` (an object
that stays in the worker), ``{"$float": "nan" | "inf" | "-inf"}``.
"""

from __future__ import annotations

import io
import json
import math
import socket
import struct

# Student code may replace builtins (e.g. isinstance); this module keeps the originals.
from builtins import (  # noqa: E402, UP029
    bool,
    dict,
    float,
    int,
    isinstance,
    len,
    list,
    str,
    tuple,
    type,
)

import numpy as np
from numpy.lib import format as npy_format

MAX_JSON_BYTES = 8 * 1024 * 1024
MAX_BLOB_BYTES = 64 * 1024 * 1024
MAX_BLOBS = 256
MAX_TOTAL_BYTES = 256 * 1024 * 1024
MAX_DEPTH = 32

_HEADER = struct.Struct("!II")
_LEN = struct.Struct("!Q")
_OK_KINDS = set("biufc?")


class ProtocolError(Exception):
    """A frame broke the wire format or its size limits."""


class ChannelClosed(ProtocolError):
    """The peer closed the connection (for a worker: it exited or was killed)."""


class Handle:
    """A reference to an object that lives in the worker (only an integer id crosses)."""

    __slots__ = ("id",)

    def __init__(self, id: int) -> None:
        self.id = int(id)

    def __repr__(self) -> str:
        return f"Handle({self.id})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Handle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("Handle", self.id))


def encode(value, blobs: list[bytes], depth: int = 0):
    """Turn a plain value into JSON-ready data, appending array payloads to ``blobs``.

    Raises:
        TypeError: when the value is not plain data.
    """
    if depth > MAX_DEPTH:
        raise TypeError("value is nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"$float": repr(float(value))}  # np.float64's repr is "np.float64(nan)"
    if isinstance(value, Handle):
        return {"$handle": value.id}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _OK_KINDS:
            raise TypeError(f"arrays of dtype {value.dtype} cannot be sent")
        buf = io.BytesIO()
        # np.asarray, not np.ascontiguousarray: that one turns a 0-d array into shape (1,).
        np.save(buf, np.asarray(value, order="C"), allow_pickle=False)
        blobs.append(buf.getvalue())
        return {"$nd": len(blobs) - 1}
    if isinstance(value, np.generic):
        return encode(value.item(), blobs, depth + 1)
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, blobs, depth + 1) for v in value]}
    if isinstance(value, list):
        return [encode(v, blobs, depth + 1) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or k.startswith("$"):
                raise TypeError("only dicts with str keys (not starting with '$') can be sent")
            out[k] = encode(v, blobs, depth + 1)
        return out
    raise TypeError(f"{type(value).__name__} is not plain data")


def decode(data, blobs: list[np.ndarray], depth: int = 0):
    """Inverse of :func:`encode`; arrays come from the already-validated ``blobs``."""
    if depth > MAX_DEPTH:
        raise ProtocolError("message nested too deeply")
    if isinstance(data, list):
        return [decode(v, blobs, depth + 1) for v in data]
    if isinstance(data, dict):
        if len(data) == 1:
            ((key, inner),) = data.items()
            if key == "$nd":
                if type(inner) is not int or not 0 <= inner < len(blobs):
                    raise ProtocolError(f"bad array reference {inner!r}")
                return blobs[inner]
            if key == "$tuple":
                if not isinstance(inner, list):
                    raise ProtocolError("bad tuple")
                return tuple(decode(v, blobs, depth + 1) for v in inner)
            if key == "$handle":
                if type(inner) is not int:
                    raise ProtocolError("bad handle")
                return Handle(inner)
            if key == "$float":
                if inner not in ("nan", "inf", "-inf"):
                    raise ProtocolError("bad float")
                return float(inner)
        return {k: decode(v, blobs, depth + 1) for k, v in data.items()}
    return data


def _load_npy(raw: bytes) -> np.ndarray:
    fp = io.BytesIO(raw)
    try:
        # Check the .npy header against the bytes received before np.load allocates the
        # array: a 100-byte payload could otherwise claim a shape of many gigabytes.
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(fp)
        else:
            raise ValueError(f".npy format version {version} is not accepted")
        if dtype.kind not in _OK_KINDS:
            raise ProtocolError(f"array payload has a forbidden dtype ({dtype})")
        expected = math.prod(shape) * dtype.itemsize
        if expected != len(raw) - fp.tell():
            raise ValueError(f"header says {expected} bytes of data, got {len(raw) - fp.tell()}")
        fp.seek(0)
        arr = np.load(fp, allow_pickle=False)
    except ProtocolError:
        raise
    except Exception as exc:  # any malformed payload is the peer's fault
        raise ProtocolError(f"malformed array payload: {exc}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in _OK_KINDS:
        raise ProtocolError("array payload has a forbidden dtype")
    return arr


def pack(message: dict) -> bytes:
    """Serialise one message (a dict of plain values) into a frame."""
    blobs: list[bytes] = []
    doc = json.dumps(encode(message, blobs), allow_nan=False).encode()
    if len(doc) > MAX_JSON_BYTES:
        raise TypeError(f"message too large ({len(doc)} bytes of JSON)")
    if len(blobs) > MAX_BLOBS:
        raise TypeError(f"message has too many arrays ({len(blobs)})")
    total = len(doc) + sum(len(b) for b in blobs)
    if total > MAX_TOTAL_BYTES or any(len(b) > MAX_BLOB_BYTES for b in blobs):
        raise TypeError("message too large")
    parts = [_HEADER.pack(len(doc), len(blobs)), doc]
    for b in blobs:
        parts += [_LEN.pack(len(b)), b]
    return b"".join(parts)


def unpack_from(read_exact) -> dict:
    """Read one frame with ``read_exact(n) -> bytes`` and decode it, enforcing the limits."""
    json_len, n_blobs = _HEADER.unpack(read_exact(_HEADER.size))
    if json_len > MAX_JSON_BYTES:
        raise ProtocolError(f"JSON part of {json_len} bytes exceeds {MAX_JSON_BYTES}")
    if n_blobs > MAX_BLOBS:
        raise ProtocolError(f"{n_blobs} arrays exceed the limit of {MAX_BLOBS}")
    raw = read_exact(json_len)
    total = json_len
    blobs = []
    for _ in range(n_blobs):
        (size,) = _LEN.unpack(read_exact(_LEN.size))
        total += size
        if size > MAX_BLOB_BYTES or total > MAX_TOTAL_BYTES:
            raise ProtocolError(f"array payload of {size} bytes exceeds the size limit")
        blobs.append(_load_npy(read_exact(size)))
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("a message must be a JSON object")
    return decode(doc, blobs)


class Channel:
    """A framed, bounded message channel over a connected stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: dict) -> None:
        try:
            self.sock.sendall(pack(message))
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ChannelClosed(str(exc)) from None

    def _read_exact(self, n: int) -> bytes:
        chunks = []
        remaining = n
        while remaining:
            try:
                chunk = self.sock.recv(min(remaining, 1 << 20))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ChannelClosed("connection closed")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def recv(self) -> dict:
        return unpack_from(self._read_exact)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
