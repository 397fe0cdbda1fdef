"""`SegmentLedger`: which of the parent's segments one worker may still read.

A segment the parent wrote for a message is *sent* until the worker answers that message,
then *lent*: the worker's arrays may still be views on it, for as long as the stage keeps
them. It goes back to the arena once the worker reports it unmapped, and is unlinked if
the worker dies first. One ledger per worker process, since only that worker reports.
"""

from __future__ import annotations

from .segments import release


class SegmentLedger:
    """The parent's segments sent to, or lent to, one worker process.

    Not thread-safe: the pool calls it while holding its own lock, as it updates the
    worker's other state in the same step.
    """

    __slots__ = ("_lent", "_sent")

    def __init__(self) -> None:
        self._sent: dict[int, list[str]] = {}
        self._lent: set[str] = set()

    def sent(self, key: int, names: list[str]) -> None:
        """The segments of a message just sent, keyed by its first task id."""
        if names:
            self._sent[key] = names

    def answered(self, key: int, unmapped: list[str]) -> list[str]:
        """The message ``key`` was answered, with the names the worker reports unmapped.

        Returns the lent segments among ``unmapped``, now forgotten: nobody maps them, so
        the caller hands them to `SegmentArena.recycle`. Other names (a message not yet
        answered, segments other processes made) are not the ledger's to give back.
        """
        self._lent.update(self._sent.pop(key, ()))
        free = []
        for name in unmapped:
            if name in self._lent:
                self._lent.discard(name)
                free.append(name)
        return free

    def release_all(self) -> None:
        """The worker died: unlink every segment still sent or lent, and forget them."""
        for names in self._sent.values():
            release(names)
        self._sent.clear()
        release(self._lent)
        self._lent.clear()
