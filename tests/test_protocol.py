"""The wire format between grader and worker: plain data round-trips, everything else is refused.

Fast unit tests: frames are built in memory (or sent over a ``socket.socketpair``); no worker
process is started.
"""

from __future__ import annotations

import builtins
import io
import json
import math
import pickle
import socket
import struct
import threading
import tracemalloc

import numpy as np
import pytest

from grader.worker import protocol
from grader.worker.protocol import (
    Channel,
    ChannelClosed,
    Handle,
    ProtocolError,
    pack,
    unpack_from,
)

# --- helpers -------------------------------------------------------------------------------


class Reader:
    """A ``read_exact`` over bytes that records every size asked for, like Channel._read_exact."""

    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)
        self.requests: list[int] = []

    def __call__(self, n: int) -> bytes:
        self.requests.append(n)
        chunk = self.stream.read(n)
        if len(chunk) < n:
            raise ChannelClosed("connection closed")
        return chunk


def roundtrip(message: dict) -> dict:
    return unpack_from(Reader(pack(message)))


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def frame(doc: bytes | str | dict, blobs: list[bytes] = (), n_blobs: int | None = None) -> bytes:
    """Build a raw frame by hand, so that it can break the rules ``pack`` enforces."""
    if isinstance(doc, dict):
        doc = json.dumps(doc)
    if isinstance(doc, str):
        doc = doc.encode()
    n = len(blobs) if n_blobs is None else n_blobs
    parts = [struct.pack("!II", len(doc), n), doc]
    for blob in blobs:
        parts += [struct.pack("!Q", len(blob)), blob]
    return b"".join(parts)


def assert_same(got, expected) -> None:
    """Equal value *and* equal type, all the way down (a tuple must not come back a list)."""
    assert type(got) is type(expected), f"{got!r} is a {type(got)}, expected {type(expected)}"
    if isinstance(expected, np.ndarray):
        assert got.dtype == expected.dtype
        assert got.shape == expected.shape
        assert np.array_equal(got, expected, equal_nan=expected.dtype.kind in "fc")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert_same(g, e)
    elif isinstance(expected, dict):
        assert list(got) == list(expected)
        for key in expected:
            assert_same(got[key], expected[key])
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got)
    elif isinstance(expected, float):
        assert got == expected
        assert math.copysign(1.0, got) == math.copysign(1.0, expected)
    else:
        assert got == expected


# --- round trips ---------------------------------------------------------------------------

ARRAYS = {
    "float64-2d": np.arange(6, dtype=np.float64).reshape(2, 3) / 7,
    "float32-3d": np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4),
    "float16": np.array([0.5, -2.0, 65504.0], dtype=np.float16),
    "int64": np.array([-(2**62), 0, 2**62], dtype=np.int64),
    "int8": np.array([-128, 127], dtype=np.int8),
    "uint8-image": np.arange(12, dtype=np.uint8).reshape(3, 4),
    "bool": np.array([[True, False], [False, True]]),
    "complex128": np.array([1 + 2j, -3.5j]),
    "nan-and-inf": np.array([np.nan, np.inf, -np.inf, -0.0]),
    "0-d": np.array(3.25),
    "0-d-int": np.array(7, dtype=np.int32),
    "empty-1d": np.zeros((0,)),
    "empty-3d": np.zeros((2, 0, 3), dtype=np.float32),
    "big-endian": np.arange(4, dtype=">i4"),
    "transposed": np.arange(6.0).reshape(2, 3).T,
    "strided-slice": np.arange(20.0)[::3],
    "fortran-order": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
}


@pytest.mark.parametrize("array", ARRAYS.values(), ids=ARRAYS.keys())
def test_arrays_round_trip_with_dtype_shape_and_values(array):
    got = roundtrip({"x": array})["x"]

    assert isinstance(got, np.ndarray)
    assert got.dtype == array.dtype
    assert got.shape == array.shape
    assert np.array_equal(got, array, equal_nan=array.dtype.kind in "fc")


PLAIN = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "negative-int": -5,
    "big-int": 2**100,
    "float": 1.5,
    "negative-zero": -0.0,
    "nan": math.nan,
    "inf": math.inf,
    "minus-inf": -math.inf,
    "empty-str": "",
    "unicode-str": "Kreuzkorrelation ✓ \u0000 \n",
    "empty-list": [],
    "empty-tuple": (),
    "list": [1, 2.5, "three"],
    "tuple": (1, (2, 3), [4]),
    "list-of-tuples": [(1, 2), (3, 4)],
    "nested-dict": {"a": {"b": {"c": [1, {"d": None}]}}, "e": ()},
    "dict-keeps-order": {"z": 1, "a": 2, "m": 3},
    "handle": Handle(7),
    "handles-in-a-tuple": (Handle(0), Handle(2**40)),
    "floats-in-list": [math.nan, -math.inf, 1e308, 5e-324],
    "arrays-in-nested": {"pair": (np.ones(2), [np.zeros((1, 1), dtype=np.int16)])},
}


@pytest.mark.parametrize("value", PLAIN.values(), ids=PLAIN.keys())
def test_plain_values_round_trip_with_their_types(value):
    assert_same(roundtrip({"value": value})["value"], value)


def test_a_tuple_stays_a_tuple_and_a_list_stays_a_list():
    got = roundtrip({"t": (1, 2), "l": [1, 2]})

    assert got == {"t": (1, 2), "l": [1, 2]}
    assert type(got["t"]) is tuple
    assert type(got["l"]) is list


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        (np.float32(1.5), 1.5),
        (np.float64(np.nan), math.nan),
        (np.int64(-3), -3),
        (np.uint8(255), 255),
        (np.bool_(True), True),
    ],
    ids=["float32", "float64-nan", "int64", "uint8", "bool"],
)
def test_numpy_scalars_arrive_as_python_scalars(scalar, expected):
    assert_same(roundtrip({"s": scalar})["s"], expected)


def test_handles_compare_by_id():
    assert Handle(3) == Handle(3)
    assert Handle(3) != Handle(4)
    assert len({Handle(3), Handle(3)}) == 1
    assert repr(Handle(3)) == "Handle(3)"


def test_non_finite_floats_are_tagged_not_written_as_bare_nan():
    # The JSON part must stay strict JSON: a bare NaN is not JSON.
    raw = pack({"x": math.nan, "y": -math.inf})
    doc = raw[8:].decode()

    assert "NaN" not in doc and "Infinity" not in doc
    assert json.loads(doc) == {"x": {"$float": "nan"}, "y": {"$float": "-inf"}}


def test_encoding_keeps_working_when_student_code_replaces_isinstance():
    # In the worker, code called from a check may replace builtins; the encoder keeps the
    # originals. (Only `encode` is under test here: json.dumps itself calls isinstance.)
    message = {"t": (1, (2, "x")), "l": [None, 2.5], "d": {"h": Handle(1)}}
    real = builtins.isinstance
    builtins.isinstance = lambda *args, **kwargs: True
    try:
        blobs: list[bytes] = []
        doc = protocol.encode(message, blobs)
    finally:
        builtins.isinstance = real

    assert_same(protocol.decode(json.loads(json.dumps(doc)), []), message)


# --- what pack refuses to send -------------------------------------------------------------

FORBIDDEN_ARRAYS = {
    "object": np.array([1, None], dtype=object),
    "str": np.array(["a", "bc"]),
    "bytes": np.array([b"a"]),
    "datetime": np.array(["2024-01-01"], dtype="datetime64[D]"),
    "structured": np.zeros(2, dtype=[("a", "i4"), ("b", "f8")]),
}


@pytest.mark.parametrize("array", FORBIDDEN_ARRAYS.values(), ids=FORBIDDEN_ARRAYS.keys())
def test_pack_refuses_arrays_that_are_not_plain_numbers(array):
    with pytest.raises(TypeError, match=r"arrays of dtype .* cannot be sent"):
        pack({"x": array})


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (object(), "object is not plain data"),
        (lambda: 0, "function is not plain data"),
        ({1, 2}, "set is not plain data"),
        (b"bytes", "bytes is not plain data"),
        ({1: "int key"}, "only dicts with str keys"),
        ({"$nd": 0}, "not starting with '\\$'"),
    ],
    ids=["object", "function", "set", "bytes", "int-key", "dollar-key"],
)
def test_pack_refuses_values_that_are_not_plain_data(value, match):
    with pytest.raises(TypeError, match=match):
        pack({"value": value})


def test_pack_refuses_values_nested_too_deeply():
    value: list = []
    for _ in range(protocol.MAX_DEPTH + 5):
        value = [value]

    with pytest.raises(TypeError, match="nested too deeply"):
        pack({"value": value})


def test_pack_refuses_a_json_part_over_the_limit(monkeypatch):
    monkeypatch.setattr(protocol, "MAX_JSON_BYTES", 100)

    with pytest.raises(TypeError, match=r"message too large \(\d+ bytes of JSON\)"):
        pack({"text": "x" * 200})


def test_pack_refuses_too_many_arrays(monkeypatch):
    monkeypatch.setattr(protocol, "MAX_BLOBS", 3)

    with pytest.raises(TypeError, match=r"too many arrays \(4\)"):
        pack({"arrays": [np.zeros(1)] * 4})


def test_pack_refuses_an_array_over_the_limit(monkeypatch):
    monkeypatch.setattr(protocol, "MAX_BLOB_BYTES", 1000)

    with pytest.raises(TypeError, match="message too large"):
        pack({"x": np.zeros(1000)})


# --- what unpack refuses to read -----------------------------------------------------------


def test_a_json_part_over_the_limit_is_refused_from_the_header_alone():
    reader = Reader(struct.pack("!II", protocol.MAX_JSON_BYTES + 1, 0))

    with pytest.raises(ProtocolError, match=r"JSON part of \d+ bytes exceeds \d+"):
        unpack_from(reader)
    assert reader.requests == [8]  # nothing read past the header


def test_too_many_blobs_are_refused_from_the_header_alone():
    reader = Reader(struct.pack("!II", 2, protocol.MAX_BLOBS + 1) + b"{}")

    with pytest.raises(ProtocolError, match=rf"{protocol.MAX_BLOBS + 1} arrays exceed the limit"):
        unpack_from(reader)
    assert reader.requests == [8]


def test_a_blob_over_the_limit_is_refused_before_its_payload_is_read():
    # The frame announces a 1 TiB blob and then ends: the reader must never be asked for it.
    data = frame("{}", n_blobs=1) + struct.pack("!Q", 2**40)
    reader = Reader(data)

    with pytest.raises(ProtocolError, match=r"array payload of \d+ bytes exceeds the size limit"):
        unpack_from(reader)
    assert max(reader.requests) < 1024


def test_blobs_over_the_total_limit_are_refused_before_the_last_payload_is_read(monkeypatch):
    monkeypatch.setattr(protocol, "MAX_TOTAL_BYTES", 1500)
    blob = npy(np.zeros(100))  # 928 bytes: one fits, two do not
    data = frame({"a": {"$nd": 0}, "b": {"$nd": 1}}, [blob, blob])
    reader = Reader(data)

    with pytest.raises(ProtocolError, match="exceeds the size limit"):
        unpack_from(reader)
    assert reader.requests.count(len(blob)) == 1


def test_an_npy_header_that_lies_about_its_shape_is_refused_before_allocating():
    # 200 bytes on the wire that claim to hold 10**9 float64 (8 GB).
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)}
    )
    blob = header.getvalue() + bytes(64)
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="array payload"):
            unpack_from(Reader(frame({"x": {"$nd": 0}}, [blob])))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20


@pytest.mark.parametrize(
    ("version", "accepted"),
    [((1, 0), True), ((2, 0), True), ((3, 0), False)],
    ids=["v1.0", "v2.0", "v3.0"],
)
def test_npy_format_versions(version, accepted):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.arange(3.0), version=version, allow_pickle=False)
    data = frame({"x": {"$nd": 0}}, [buf.getvalue()])

    if accepted:
        assert_same(unpack_from(Reader(data)), {"x": np.arange(3.0)})
    else:
        with pytest.raises(ProtocolError, match="version .* is not accepted"):
            unpack_from(Reader(data))


class Tripwire:
    """Unpickling this object records it: the grader must never get that far."""

    def __reduce__(self):
        return (_tripped.append, ("unpickled!",))


_tripped: list[str] = []


@pytest.mark.parametrize(
    "blob",
    [
        npy(np.array([Tripwire(), 1], dtype=object), allow_pickle=True),
        pickle.dumps(np.array([Tripwire()], dtype=object)),
        pickle.dumps({"x": Tripwire()}),
    ],
    ids=["npy-object-array", "pickled-array", "plain-pickle"],
)
def test_a_payload_containing_a_pickle_is_refused_and_never_unpickled(blob):
    _tripped.clear()

    with pytest.raises(ProtocolError, match="array payload"):
        unpack_from(Reader(frame({"x": {"$nd": 0}}, [blob])))
    assert _tripped == []


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x93NUMPY", b"not an array at all", npy(np.zeros(4))[:-8]],
    ids=["empty", "magic-only", "garbage", "truncated"],
)
def test_a_malformed_array_payload_is_refused(blob):
    with pytest.raises(ProtocolError, match="array payload"):
        unpack_from(Reader(frame({"x": {"$nd": 0}}, [blob])))


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (b"{not json", "malformed JSON"),
        (b"", "malformed JSON"),
        (b'{"a": 1', "malformed JSON"),
        (b'{"a": "\xff"}', "malformed JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b"42", "must be a JSON object"),
    ],
    ids=["garbage", "empty", "truncated", "not-utf8", "list", "string", "null", "number"],
)
def test_a_malformed_json_part_is_refused(doc, match):
    with pytest.raises(ProtocolError, match=match):
        unpack_from(Reader(frame(doc)))


BAD_INDICES = {
    "negative": -1,
    "one-past-end": 1,
    "far-past-end": 5,
    "string": "0",
    "float-zero": 0.0,
    "float": 1.5,
    "null": None,
    "bool": True,
    "list": [0],
}


@pytest.mark.parametrize("index", BAD_INDICES.values(), ids=BAD_INDICES.keys())
def test_a_bad_array_reference_is_refused(index):
    data = frame({"x": {"$nd": index}}, [npy(np.zeros(2))])

    with pytest.raises(ProtocolError, match="bad array reference"):
        unpack_from(Reader(data))


BAD_TAGS = {
    "tuple-int": ({"$tuple": 3}, "bad tuple"),
    "tuple-dict": ({"$tuple": {"a": 1}}, "bad tuple"),
    "handle-str": ({"$handle": "7"}, "bad handle"),
    "handle-bool": ({"$handle": True}, "bad handle"),
    "handle-float": ({"$handle": 1.0}, "bad handle"),
    "float-other-text": ({"$float": "1e999"}, "bad float"),
    "float-number": ({"$float": 1.0}, "bad float"),
}


@pytest.mark.parametrize(("tagged", "match"), BAD_TAGS.values(), ids=BAD_TAGS.keys())
def test_malformed_tagged_values_are_refused(tagged, match):
    with pytest.raises(ProtocolError, match=match):
        unpack_from(Reader(frame({"x": tagged})))


def test_a_message_nested_too_deeply_is_refused():
    doc = '{"x": ' + "[" * (protocol.MAX_DEPTH + 5) + "]" * (protocol.MAX_DEPTH + 5) + "}"

    with pytest.raises(ProtocolError, match="nested too deeply"):
        unpack_from(Reader(frame(doc)))


def test_an_unknown_dollar_key_is_just_a_dict():
    assert unpack_from(Reader(frame({"x": {"$other": 1}}))) == {"x": {"$other": 1}}


# --- the socket channel --------------------------------------------------------------------


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    yield Channel(a), Channel(b)
    a.close()
    b.close()


def test_a_channel_carries_messages_both_ways(pair):
    left, right = pair
    left.send({"op": "call", "args": (np.eye(3), Handle(1))})
    got = right.recv()
    right.send({"ok": True})

    assert_same(got, {"op": "call", "args": (np.eye(3), Handle(1))})
    assert left.recv() == {"ok": True}


def test_a_channel_carries_a_message_larger_than_the_socket_buffer(pair):
    left, right = pair
    big = np.random.default_rng(0).standard_normal((1024, 1024))  # 8 MiB
    sender = threading.Thread(target=left.send, args=({"x": big},))
    sender.start()
    got = right.recv()
    sender.join(10)

    assert np.array_equal(got["x"], big)


@pytest.mark.parametrize("cut", [0, 4, 8, 12, 20, -10], ids=lambda c: f"cut-at-{c}")
def test_eof_mid_frame_raises_channel_closed(pair, cut):
    left, right = pair
    data = pack({"x": np.arange(4.0), "y": "text"})
    left.sock.sendall(data[:cut] if cut >= 0 else data[:cut])
    left.sock.shutdown(socket.SHUT_WR)

    with pytest.raises(ChannelClosed, match="connection closed"):
        right.recv()


def test_sending_to_a_closed_peer_raises_channel_closed(pair):
    left, right = pair
    right.close()

    with pytest.raises(ChannelClosed):
        for _ in range(100):  # the first sends may still land in the socket buffer
            left.send({"x": np.zeros(10_000)})


def test_channel_closed_is_a_protocol_error():
    assert issubclass(ChannelClosed, ProtocolError)


@pytest.mark.parametrize(
    "array",
    [
        np.array(3.5),
        np.zeros((0, 3), np.int32),
        np.asfortranarray(np.arange(6).reshape(2, 3)),
        np.array([True, False]),
        np.arange(4, dtype=">f8"),
        np.zeros((2, 2), np.complex128),
        np.float16([1, 2]),
    ],
    ids=["0-d", "empty", "fortran-order", "bool", "big-endian", "complex", "float16"],
)
def test_any_npy_that_np_save_writes_is_read_back_writable(array):
    got = unpack_from(Reader(frame({"x": {"$nd": 0}}, [npy(array)])))["x"]

    assert_same(got, array)
    assert got.flags.writeable


@pytest.mark.parametrize(
    "header",
    [
        "{'shape': (3,), 'fortran_order': False, 'descr': '<f8', }",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), 'extra': 1, }",
        "{'descr': '<M8', 'fortran_order': False, 'shape': (3,), }",
        "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (3,), }",
        "{'descr': '<f8', 'fortran_order': 0, 'shape': (3,), }",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (-3,), }",
    ],
    ids=["keys-reordered", "extra-key", "datetime", "structured", "int-flag", "negative-dim"],
)
def test_an_npy_header_np_save_would_not_write_is_refused(header):
    text = header.ljust(118) + "\n"
    blob = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode() + bytes(24)

    with pytest.raises(ProtocolError, match="array payload"):
        unpack_from(Reader(frame({"x": {"$nd": 0}}, [blob])))


def test_an_npy_header_longer_than_numpy_allows_is_refused():
    text = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }".ljust(20_000) + "\n"
    blob = b"\x93NUMPY\x02\x00" + len(text).to_bytes(4, "little") + text.encode() + bytes(24)

    with pytest.raises(ProtocolError, match="header of 20001 bytes is too long"):
        unpack_from(Reader(frame({"x": {"$nd": 0}}, [blob])))
