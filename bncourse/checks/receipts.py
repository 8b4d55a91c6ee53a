"""A receipt: what a grading kernel recorded of the learner's function, as plain data (``Receipt``).

For each case of one ``check_function`` call, a ``RecordedCall``: a digest of the inputs and the
learner function's return value (or error), arrays as exact bytes and any other object as an
opaque stand-in (never pickle: the grader must not run code a learner crafted). ``to_json()`` is
what the kernel publishes (display data of type ``MIME``); ``Receipt.from_json()`` is the
grader's only reader, and refuses anything damaged or inflating past ``MAX_RECEIPT_BYTES``.
``ReceiptBudget.read_cell(bundles)`` is how the grader reads a test cell's receipts: all of a cell's,
and all of a notebook's, inflate to at most ``MAX_CELL_RECEIPT_BYTES`` and
``MAX_NOTEBOOK_RECEIPT_BYTES`` (beyond, ``ReceiptsTooLarge``: the cell is refused unread), and no
receipt holds more than ``MAX_RECEIPT_TOKENS`` JSON separators (what parsing one costs in memory).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bncourse.checks.calls import Call

__all__ = ["MAX_CELL_RECEIPT_BYTES", "MAX_NOTEBOOK_RECEIPT_BYTES", "MAX_RECEIPT_BYTES", "MAX_RECEIPT_TOKENS", "MIME",
           "Opaque", "Receipt", "ReceiptBudget", "ReceiptsTooLarge", "RecordedCall", "decode", "digest", "encode",
           "pack", "unpack"]

MIME = "application/vnd.bncourse.receipt+json"
_MAX_ARRAY_BYTES = 64 * 1024 * 1024
MAX_RECEIPT_BYTES = 4 * _MAX_ARRAY_BYTES  # what one receipt may inflate to in the grader
# All of one test cell's receipts, and all of one notebook's (one re-judging job): a kernel can publish
# any number of receipts (red team 2: one 253 kB receipt cost ~770 MB, three 2.7 GB in the grader).
MAX_CELL_RECEIPT_BYTES = MAX_RECEIPT_BYTES
MAX_NOTEBOOK_RECEIPT_BYTES = 2 * MAX_RECEIPT_BYTES
# JSON separators (',' and ':') in one receipt: a receipt holds arrays as base64 strings and at most
# 64 x 64 x 64 items of nested sequences, far fewer; a list of millions of small numbers costs
# its parser ~8 bytes of pointer per 2 bytes of text, which this bounds before parsing.
MAX_RECEIPT_TOKENS = 2_000_000


# ---------------------------------------------------------------------------------------------
# Plain-data encoding (never pickle: the grader must not run code a learner crafted)
# ---------------------------------------------------------------------------------------------


class Opaque:
    """Stands in for an object that is not plain data (it never compares equal to an array)."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


def encode(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-able data: exact ndarrays (numeric), tuples, lists, None; else opaque."""
    t = type(value)
    if value is None:
        return None
    if t is np.ndarray and value.dtype.kind in "biufc" and value.nbytes <= _MAX_ARRAY_BYTES and not value.dtype.hasobject:
        arr = np.ascontiguousarray(value)
        return {"nd": arr.dtype.str, "shape": list(arr.shape), "b64": base64.b64encode(arr.tobytes()).decode("ascii")}
    if t in (tuple, list) and depth < 3 and len(value) <= 64:
        return {"seq": "tuple" if t is tuple else "list", "items": [encode(v, depth + 1) for v in value]}
    return {"opaque": t.__name__[:80]}


def decode(data: Any) -> Any:
    if data is None:
        return None
    if type(data) is not dict:
        return Opaque("unknown")
    if "nd" in data:
        dtype = np.dtype(str(data["nd"]))
        if dtype.kind not in "biufc":
            return Opaque("ndarray")
        shape = tuple(int(s) for s in data["shape"])
        raw = base64.b64decode(data["b64"])
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if "seq" in data:
        items = [decode(v) for v in data.get("items", [])]
        return tuple(items) if data["seq"] == "tuple" else items
    return Opaque(str(data.get("opaque", "object")))


def digest(args: tuple) -> str:
    """A short fingerprint of a call's arguments (arrays by dtype, shape and bytes)."""
    h = hashlib.sha256()
    for a in args:
        if type(a) is np.ndarray:
            arr = np.ascontiguousarray(a)
            h.update(f"nd{arr.dtype.str}{arr.shape}".encode())
            if not arr.dtype.hasobject:
                h.update(arr.tobytes())
        elif type(a) in (int, float, bool, str, type(None)):
            h.update(f"{type(a).__name__}:{a!r}".encode())
        else:
            h.update(f"<{type(a).__name__}>".encode())
        h.update(b"|")
    return h.hexdigest()[:24]


@dataclass
class RecordedCall:
    """One call of the learner's function: the arguments' ``digest``, the return ``value`` as
    ``encode`` gives it (``None`` after an error), the error, the arguments it changed in place
    and what the kernel's watch saw it hand its work to."""

    digest: str
    value: Any = None
    error: str = ""
    error_type: str = ""
    mutated: list[int] = field(default_factory=list)
    delegated: str = ""

    def to_call(self) -> Call:
        """The ``Call`` a check judges, the value decoded."""
        return Call(value=None if self.error else decode(self.value), error=self.error, error_type=self.error_type,
                    mutated=list(self.mutated), delegated=self.delegated)


@dataclass
class Receipt:
    """What one ``check_function`` call in a grading kernel recorded: its exercise and every call.

    ``to_json()`` is what the kernel publishes (a compressed bundle, ``MIME``); ``from_json(bundle)``
    is the only reader, and returns ``None`` for anything that is not a whole, well-formed receipt.
    """

    exercise: str
    calls: list[RecordedCall] = field(default_factory=list)

    def to_json(self) -> dict:
        entry = {"exercise": self.exercise, "calls": [asdict(c) for c in self.calls]}
        raw = zlib.compress(json.dumps(entry).encode("utf-8"), 6)
        return {"v": 1, "z": base64.b64encode(raw).decode("ascii")}

    @classmethod
    def from_json(cls, bundle: Any) -> "Receipt | None":
        raw = _inflate(bundle, MAX_RECEIPT_BYTES)
        return None if raw is None or raw is _BEYOND else cls._parse(raw)

    @classmethod
    def _parse(cls, raw: bytes) -> "Receipt | None":
        try:
            if raw.count(b",") + raw.count(b":") > MAX_RECEIPT_TOKENS:
                return None
            entry = json.loads(raw.decode("utf-8"))
            if type(entry) is not dict or type(entry.get("calls", [])) is not list:
                return None
            calls = [RecordedCall(digest=str(c.get("digest") or ""), value=c.get("value"),
                                  error=str(c.get("error") or ""), error_type=str(c.get("error_type") or ""),
                                  mutated=[int(i) for i in c.get("mutated") or []],
                                  delegated=str(c.get("delegated") or ""))
                     for c in entry.get("calls", [])]
            return cls(str(entry.get("exercise") or ""), calls)
        except Exception:  # noqa: BLE001 - a damaged receipt is simply not a receipt
            return None


_BEYOND = b"<beyond the limit>"


def _inflate(bundle: Any, limit: int) -> bytes | None:
    """The receipt's JSON text; ``None`` if ``bundle`` is not a receipt; ``_BEYOND`` past ``limit`` bytes."""
    try:
        if type(bundle) is not dict or bundle.get("v") != 1:
            return None
        inflate = zlib.decompressobj()
        raw = inflate.decompress(base64.b64decode(bundle["z"]), max(1, limit))
        return _BEYOND if inflate.unconsumed_tail or len(raw) > limit else raw
    except Exception:  # noqa: BLE001 - a damaged receipt is simply not a receipt
        return None


def _size(n: int) -> str:
    return f"{n >> 20} MB" if n >= 1 << 20 else f"{n >> 10} kB"


class ReceiptsTooLarge(ValueError):
    """A test cell's receipts inflate past what the grader unpacks for one cell or one notebook."""


class ReceiptBudget:
    """What the grader unpacks of one notebook's receipts: ``cell_bytes`` per test cell and
    ``notebook_bytes`` in all, inflated. ``read_cell(bundles)`` reads one cell's."""

    def __init__(self, cell_bytes: int = MAX_CELL_RECEIPT_BYTES, notebook_bytes: int = MAX_NOTEBOOK_RECEIPT_BYTES):
        self.cell_bytes, self.notebook_bytes, self.used = int(cell_bytes), int(notebook_bytes), 0

    def read_cell(self, bundles: list) -> list[Receipt]:
        """The cell's well-formed receipts, in order (a damaged one, or one past ``MAX_RECEIPT_BYTES``
        alone, is dropped as before); ``ReceiptsTooLarge`` when they add up past either cap."""
        cell_used, out = 0, []
        for bundle in bundles:
            cell_left, notebook_left = self.cell_bytes - cell_used, self.notebook_bytes - self.used
            limit = min(MAX_RECEIPT_BYTES, cell_left, notebook_left)
            raw = _inflate(bundle, limit)
            if raw is _BEYOND and limit < MAX_RECEIPT_BYTES:
                self.used += cell_used
                which = (f"{_size(self.cell_bytes)} per test cell" if cell_left <= notebook_left
                         else f"{_size(self.notebook_bytes)} per notebook")
                raise ReceiptsTooLarge(f"its {len(bundles)} receipts inflate past the grader's cap of {which}; "
                                       f"the cell is refused unread")
            if raw is None or raw is _BEYOND:
                continue
            cell_used += len(raw)
            receipt = Receipt._parse(raw)
            if receipt is not None:
                out.append(receipt)
        self.used += cell_used
        return out


def pack(receipt: Receipt) -> dict:
    """``receipt.to_json()`` (the name the tests' recorders use)."""
    return receipt.to_json()


def unpack(bundle: Any) -> Receipt | None:
    """``Receipt.from_json(bundle)``."""
    return Receipt.from_json(bundle)
