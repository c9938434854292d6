"""Wire format between the trusted grader and a worker.

A message is one frame: an 8-byte header (JSON length, number of array blobs), the JSON
document, then each blob as an 8-byte length and ``.npy`` bytes. Only JSON and ``.npy``
cross the boundary: arrays are written by ``np.save`` with ``allow_pickle=False`` and read
back by a strict parser of exactly the header it writes, for numeric and boolean dtypes
only; nothing is ever unpickled or evaluated. Every length is bounded *before* anything is
allocated, so a hostile worker cannot make the grader read an unbounded message.

Plain values are encoded as JSON with a few tagged objects:
``{"$nd": i}`` (the i-th array blob), ``{"$tuple": [...]}``, ``{"$handle": id}`` (an object
that stays in the worker), ``{"$float": "nan" | "inf" | "-inf"}``.
"""

from __future__ import annotations

import io
import json
import math
import re
import socket
import struct
import time

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
from typing import Literal, get_args

import numpy as np

MAX_JSON_BYTES = 8 * 1024 * 1024
MAX_BLOB_BYTES = 64 * 1024 * 1024
MAX_BLOBS = 256
MAX_TOTAL_BYTES = 256 * 1024 * 1024
MAX_DEPTH = 32

_HEADER = struct.Struct("!II")
_LEN = struct.Struct("!Q")
_OK_KINDS = set("biufc?")

# The protocol's vocabulary, declared once for both sides. A request names its operation;
# the worker answers ``{"ok": True, ...}`` or a failure of one of these kinds.
Op = Literal[
    "setup",  # before the first cell: the notebook's seed, the packages it may import
    "run_cell",
    "seed",  # before a check's calls: the check's own seed
    "has",
    "value",
    "type",
    "call",
    "probe",
    "release",  # forget handles
    "ping",
    "bye",
]
OPS: frozenset[str] = frozenset(get_args(Op))
FailureKind = Literal[
    "missing",  # the notebook does not define the name
    "raised",  # student code raised
    "not_plain",  # a value was asked for, and it is not plain data
    "usage",  # the request itself was wrong
    "interrupted",  # the grader's SIGINT stopped it
    "too_large",  # the reply could not be encoded within the limits
]
FAILURE_KINDS: frozenset[str] = frozenset(get_args(FailureKind))
Want = Literal["auto", "value", "handle"]  # what a call or value request asks back


def request(op: Op, **fields: object) -> dict:
    """A request of operation ``op`` with its fields."""
    return {"op": op, **fields}


def failure(kind: FailureKind, **fields: object) -> dict:
    """The reply of an operation that did not succeed."""
    return {"ok": False, "kind": kind, **fields}


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


# The header ``np.save`` writes, and nothing else: a Python dict literal with these keys in
# this order. Parsed here rather than by numpy's reader, which evaluates it with
# ``ast.literal_eval`` (measured: 56 us an array against 3.6 us here, and a submission's
# checks exchange hundreds). numpy's own reader refuses headers over 10,000 bytes too.
_NPY_MAX_HEADER = 10_000
_NPY_HEADER = re.compile(
    r"\{'descr': '(?P<descr>[<>|=][biufc][0-9]{1,2})', "
    r"'fortran_order': (?P<fortran>True|False), "
    r"'shape': \((?P<shape>(?:[0-9]{1,19}, ?)*(?:[0-9]{1,19})?)\), \} *\n"
)
_NPY_MAGIC = b"\x93NUMPY"


def _load_npy(raw: bytes) -> np.ndarray:
    """Read one ``.npy`` payload, checking its header against the bytes received.

    The header is checked before anything is allocated: a 100-byte payload could otherwise
    claim a shape of many gigabytes. Only numeric and boolean dtypes are accepted.
    """
    try:
        if raw[:6] != _NPY_MAGIC or len(raw) < 10:
            raise ValueError("not an .npy payload")
        version = (raw[6], raw[7])
        if version == (1, 0):
            start, header_len = 10, int.from_bytes(raw[8:10], "little")
        elif version == (2, 0) and len(raw) >= 12:
            start, header_len = 12, int.from_bytes(raw[8:12], "little")
        else:
            raise ValueError(f".npy format version {version} is not accepted")
        if header_len > _NPY_MAX_HEADER:
            raise ValueError(f"a header of {header_len} bytes is too long for an .npy payload")
        header = raw[start : start + header_len].decode("latin-1")
        match = _NPY_HEADER.fullmatch(header)
        if match is None or len(header) != header_len:
            raise ValueError("the .npy header is not one np.save writes")
        dtype = np.dtype(match["descr"])
        if dtype.kind not in _OK_KINDS:
            raise ProtocolError(f"array payload has a forbidden dtype ({dtype})")
        shape = tuple(int(d) for d in match["shape"].replace(" ", "").split(",") if d)
        count = math.prod(shape)
        data_start = start + header_len
        if count * dtype.itemsize != len(raw) - data_start:
            raise ValueError(
                f"header says {count * dtype.itemsize} bytes of data, got {len(raw) - data_start}"
            )
        order: Literal["C", "F"] = "F" if match["fortran"] == "True" else "C"
        flat = np.frombuffer(raw, dtype=dtype, count=count, offset=data_start)
        array = flat.reshape(shape, order=order)
        # A channel reads each payload into its own bytearray: the array may keep it (it is
        # writable and pins nothing else). Read-only bytes are copied, so the array is
        # writable, as np.load's are.
        return array if array.flags.writeable else array.copy(order="K")
    except ProtocolError:
        raise
    except Exception as exc:  # any malformed payload is the peer's fault
        raise ProtocolError(f"malformed array payload: {exc}") from None


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
    except RecursionError:  # e.g. a million "[": the parser recurses once per level
        raise ProtocolError(f"message nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(doc, dict):
        raise ProtocolError("a message must be a JSON object")
    return decode(doc, blobs)


class Channel:
    """A framed, bounded message channel over a connected stream socket.

    :meth:`recv` may be given an absolute *deadline* for the whole frame (not per ``recv``
    call: a peer that sends one byte every few seconds must not stretch it). A frame cut off
    by its deadline is kept: the next :meth:`recv` resumes it, so the grader can give an
    interrupted worker a grace period to finish the reply it was sending.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._pieces: list[bytearray] = []  # the parts of the frame being read, in order
        self._cursor = 0
        self._partial: bytearray | None = None
        self._filled = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: dict) -> None:
        try:
            self.sock.sendall(pack(message))
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ChannelClosed(str(exc)) from None

    def _take(self, n: int, deadline: float | None) -> bytearray:
        """The next ``n`` bytes of the frame: a part read before, or read now."""
        if self._cursor < len(self._pieces):  # resuming a frame: parts already received
            piece = self._pieces[self._cursor]
            if len(piece) != n:
                raise ProtocolError("a resumed frame does not match its first reading")
            self._cursor += 1
            return piece
        if self._partial is None:
            # n was checked against the limits by unpack_from before this allocation.
            self._partial, self._filled = bytearray(n), 0
        with memoryview(self._partial) as view:
            while self._filled < n:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError("the frame's deadline passed")
                    self.sock.settimeout(remaining)
                try:
                    got = self.sock.recv_into(view[self._filled :], min(n - self._filled, 1 << 20))
                except ConnectionResetError:
                    got = 0
                if not got:
                    raise ChannelClosed("connection closed")
                self._filled += got
        piece, self._partial = self._partial, None
        self._pieces.append(piece)
        self._cursor += 1
        return piece

    def recv(self, deadline: float | None = None) -> dict:
        """Read one message; ``deadline`` (``time.monotonic()`` seconds) bounds the whole frame.

        Raises:
            TimeoutError: the deadline passed; the part received is kept for the next call.
            ChannelClosed: the peer closed the connection.
            ProtocolError: the frame broke the format or its limits.
        """
        self._cursor = 0
        try:
            message = unpack_from(lambda n: self._take(n, deadline))
        except TimeoutError:
            raise
        except BaseException:
            self._forget()
            raise
        self._forget()
        return message

    def _forget(self) -> None:
        self._pieces, self._cursor, self._partial, self._filled = [], 0, None, 0

    @property
    def mid_frame(self) -> bool:
        """True when part of a frame has been received and the rest has not."""
        return bool(self._pieces) or self._partial is not None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
