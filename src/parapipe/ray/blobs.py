"""Large results stay in Ray's object store, owned by the driver, and go from actor to actor.

Without this, every stage's answer came back to the driver whole: its arrays were read out of
the object store into the driver, then written into it again once per next stage's call (the
speech graph on two nodes ran at 0.86x the local backend). Now an actor whose result is large
(`is_large`) returns it as a second return value of the call (``num_returns=2``): Ray makes the
*caller*, the driver, that object's owner, so it outlives the actor that made it (a crash, a
retirement, a restart). The answer the driver reads carries a `Blob` marker in its place, which
the driver turns into a `RefPacked` (`resolve`) and forwards as it is: the next stage's actor
borrows the reference and reads the arrays from its node's object store (zero-copy for numpy).
The driver reads the value only for a merge or a final result (`transport.unpacked`), as it does
a local worker's `transport.Packed`.

A stage's calls are split this way only after one of its answers was large: a call with two
returns costs a second object per call, which small answers (most stages) need not pay.
"""

from __future__ import annotations

from typing import Any

from .. import transport
from ..worker import protocol

__all__ = ["LARGE_BYTES", "Blob", "RefPacked", "is_large", "resolve", "split_large"]

LARGE_BYTES = 100 * 1024
"""Ray inlines a return value under 100 KiB into the call's reply: below that the object store
is no cheaper than the answer itself."""
_DEPTH = 2
"""How deep `is_large` looks: a result, its fields or elements, and theirs (an `AudioClip`'s
array, a dict of arrays). Deeper arrays are rare, and the walk must stay cheap."""


def _nbytes(value: Any, depth: int) -> int:
    """Bytes held in numpy-like arrays and bytes-likes, up to ``depth`` levels of containers
    and object fields down; stops counting once past `LARGE_BYTES`."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return 0
    size = getattr(value, "nbytes", None)
    if isinstance(size, int):
        return size
    if depth == 0:
        return 0
    if isinstance(value, dict):
        parts: Any = value.values()
    elif isinstance(value, (list, tuple)):
        parts = value
    else:
        fields = getattr(value, "__dict__", None)
        if not isinstance(fields, dict):
            return 0
        parts = fields.values()
    total = 0
    for part in parts:
        total += _nbytes(part, depth - 1)
        if total >= LARGE_BYTES:
            break
    return total


def is_large(value: Any) -> bool:
    """Whether a result is worth an object of its own in the object store."""
    return _nbytes(value, _DEPTH) >= LARGE_BYTES


class Blob:
    """In an actor's answer, where a large result was: its index in the call's second return."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (Blob, (self.index,))


def split_large(rows: list[protocol.Result]) -> tuple[list[protocol.Result], list[Any]]:
    """The rows with each large result replaced by a `Blob`, and those results in order."""
    blobs: list[Any] = []
    out: list[protocol.Result] = []
    for row in rows:
        tid, ok, value, t0, t1, cpu = row
        if ok and is_large(value):
            out.append((tid, ok, Blob(len(blobs)), t0, t1, cpu))
            blobs.append(value)
        else:
            out.append(row)
    return out, blobs


class RefPacked(transport.Packed):
    """A large result still in the object store: element ``index`` of the list ``ref`` holds.

    Pickled, it is only the reference (which Ray serialises as a borrowed `ObjectRef`), so the
    driver passes it on to the next stage without its bytes; `unpack` reads it where it is
    needed, zero-copy for numpy arrays on the object's node."""

    __slots__ = ("index", "ref")

    def __init__(self, ref: Any, index: int) -> None:
        super().__init__(b"")
        self.ref = ref
        self.index = index

    def unpack(self) -> Any:
        """Not `ray.get`: in the driver, a blocked ``ray.get`` can hold up the other replicas'
        readers (`host._wait`); the future works the same in an actor."""
        return self.ref.future().result()[self.index]

    def adopt(self) -> RefPacked:
        """The driver owns the object: Ray frees it when the last `RefPacked` goes."""
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (RefPacked, (self.ref, self.index))


def resolve(rows: list[protocol.Result], blobs: Any) -> list[protocol.Result]:
    """The rows of an answer with its `Blob` markers replaced by references into ``blobs``,
    the call's second return (which the driver owns and does not read)."""
    return [
        (row[0], True, RefPacked(blobs, row[2].index), *row[3:]) if row[1] and type(row[2]) is Blob else row
        for row in rows
    ]
