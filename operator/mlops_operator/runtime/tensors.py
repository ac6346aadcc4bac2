"""Open Inference Protocol V2 tensors: datatypes, JSON `data` and the binary tensor extension.

Pure numpy; no HTTP and no model here. A tensor is decoded into a numpy array of its declared shape:
numeric datatypes into their own numpy dtype (values checked against the datatype's range: an
integer datatype takes only integers within its bounds, BOOL only true/false), BYTES into an object
array of `bytes`. Binary data is little-endian and row-major, BYTES elements each prefixed by a
4-byte little-endian length, as the KServe/Triton binary tensor extension defines
(`Inference-Header-Content-Length`, `parameters.binary_data_size`). Every malformed layout raises
`BadTensor` naming the tensor and the reason; nothing here raises anything else for client input.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
DATATYPES = frozenset({*DTYPES, "BYTES"})
INTEGERS = frozenset(k for k, v in DTYPES.items() if v.kind in "iu")
MAX_ELEMENTS = 100_000_000  # a shape's product past this is refused before any allocation


class BadTensor(ValueError):
    """A client's tensor that breaks the protocol (always answered 400)."""


def check_shape(shape: Any, where: str) -> list[int]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise BadTensor(f"{where}.shape must be a list of non-negative integers")
    if math.prod(shape) > MAX_ELEMENTS:
        raise BadTensor(f"{where}.shape {shape} holds more than {MAX_ELEMENTS} values")
    return shape


def _flatten(data: Any, shape: list[int], where: str) -> list[Any]:
    """Row-major values of `data`: flat, or nested exactly as `shape` says (one list per dimension)."""
    if not isinstance(data, list):
        raise BadTensor(f"{where}.data must be a list")
    if not data or not isinstance(data[0], list):
        if any(isinstance(v, list | dict) for v in data):
            raise BadTensor(f"{where}.data mixes lists and values")
        return data
    out: list[Any] = []

    def walk(level: Any, depth: int) -> None:
        if depth == len(shape) - 1:
            if not isinstance(level, list) or len(level) != shape[depth] or \
                    any(isinstance(v, list | dict) for v in level):
                raise BadTensor(f"{where}.data is nested unlike its shape {shape}")
            out.extend(level)
            return
        if not isinstance(level, list) or len(level) != shape[depth]:
            raise BadTensor(f"{where}.data is nested unlike its shape {shape}")
        for sub in level:
            walk(sub, depth + 1)

    if len(shape) < 2:
        raise BadTensor(f"{where}.data is nested unlike its shape {shape}")
    walk(data, 0)
    return out


def _range_error(values: np.ndarray, datatype: str, where: str) -> str | None:
    dtype = DTYPES[datatype]
    if not np.all(np.isfinite(values)):
        return f"{where}.data: {datatype} takes only finite integers"
    if not np.all(np.floor(values) == values):
        bad = values[np.floor(values) != values][0]
        return f"{where}.data: {bad!r} is not an integer ({datatype})"
    info = np.iinfo(dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        bad = values[(values < info.min) | (values > info.max)][0]
        return f"{where}.data: {int(bad)} is outside {datatype}'s range [{info.min}, {info.max}]"
    return None


def from_json(data: Any, shape: list[int], datatype: str, where: str) -> np.ndarray:
    """The array of a tensor given as JSON `data` (null is a missing value, NaN, in floating types)."""
    flat = _flatten(data, shape, where)
    if math.prod(shape) != len(flat):
        raise BadTensor(f"{where}: shape {shape} holds {math.prod(shape)} values but data has {len(flat)}")
    if datatype == "BYTES":
        if not all(isinstance(v, str) or v is None for v in flat):
            bad = next(v for v in flat if not isinstance(v, str) and v is not None)
            raise BadTensor(f"{where}.data: {bad!r} is not a string (BYTES)")
        out = np.empty(len(flat), dtype=object)
        out[:] = [None if v is None else v.encode() for v in flat]
        return out.reshape(shape)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            bad = next(v for v in flat if not isinstance(v, bool))
            raise BadTensor(f"{where}.data: {bad!r} is not true or false (BOOL)")
        return np.asarray(flat, dtype=bool).reshape(shape)
    try:
        values = np.asarray(flat, dtype=np.float64)
    except (TypeError, ValueError):
        bad = next((v for v in flat if v is not None and (isinstance(v, bool) or not isinstance(v, int | float))),
                   None)
        raise BadTensor(f"{where}.data: {bad!r} is not a number") from None
    if datatype in INTEGERS:
        if any(isinstance(v, bool) or v is None for v in flat):
            raise BadTensor(f"{where}.data: {datatype} takes integers (no null or true/false)")
        if (problem := _range_error(values, datatype, where)) is not None:
            raise BadTensor(problem)
        return np.asarray(flat, dtype=DTYPES[datatype]).reshape(shape)
    if datatype == "FP16" or datatype == "FP32":
        finite = values[np.isfinite(values)]
        limit = float(np.finfo(DTYPES[datatype]).max)
        if finite.size and np.abs(finite).max() > limit:
            raise BadTensor(f"{where}.data: a value is outside {datatype}'s range (±{limit:g})")
        return values.astype(DTYPES[datatype]).reshape(shape)
    return values.reshape(shape)


def from_binary(raw: memoryview | bytes, shape: list[int], datatype: str, where: str) -> np.ndarray:
    """The array of a tensor given as raw bytes (the binary extension, or gRPC's raw_input_contents)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        items = split_bytes(raw, where)
        if len(items) != count:
            raise BadTensor(f"{where}: shape {shape} holds {count} values but the binary data has {len(items)}")
        out = np.empty(count, dtype=object)
        out[:] = items
        return out.reshape(shape)
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise BadTensor(f"{where}: shape {shape} of {datatype} takes {count * dtype.itemsize} bytes; "
                        f"the binary data has {len(raw)}")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if datatype == "BOOL" and array.size and np.frombuffer(raw, dtype=np.uint8).max() > 1:
        raise BadTensor(f"{where}: BOOL bytes must be 0 or 1")
    return array


def split_bytes(raw: memoryview | bytes, where: str) -> list[bytes]:
    """BYTES elements of a binary buffer: each a 4-byte little-endian length, then that many bytes."""
    view, items, i = memoryview(raw), [], 0
    while i < len(view):
        if i + 4 > len(view):
            raise BadTensor(f"{where}: the binary BYTES data ends inside an element's length")
        (n,) = struct.unpack_from("<I", view, i)
        i += 4
        if i + n > len(view):
            raise BadTensor(f"{where}: a BYTES element of {n} bytes runs past the binary data")
        items.append(bytes(view[i:i + n]))
        i += n
    return items


def to_binary(array: np.ndarray, datatype: str) -> bytes:
    """Raw bytes of an output tensor (the inverse of from_binary)."""
    if datatype == "BYTES":
        parts = []
        for v in array.ravel().tolist():
            b = v if isinstance(v, bytes) else str(v).encode()
            parts.append(struct.pack("<I", len(b)) + b)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=DTYPES[datatype]).tobytes()


def to_json(array: np.ndarray, datatype: str) -> list[Any]:
    """Flat row-major JSON values of an output tensor."""
    if datatype == "BYTES":
        return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in array.ravel().tolist()]
    return list(np.asarray(array, dtype=DTYPES[datatype]).ravel().tolist())


def datatype_of(array: np.ndarray) -> str:
    """The V2 datatype an output array is sent as."""
    kind = array.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP32" if array.dtype.itemsize == 4 else "FP64"
    return "BYTES"
