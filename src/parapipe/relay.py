"""`Relay`: a future answered from another one, without a reference cycle between the two.

Wrapping a future the usual way, with a done-callback on each side (the outer one cancels the
inner, the inner one answers the outer), ties them in a cycle that outlives both outcomes:
``concurrent.futures`` keeps a future's callbacks after running them. Every finished item of a
``map`` would then live, with its result, until the cycle collector runs, and with it off
forever (issue 20). A `Relay` forwards cancellation through a method instead, and lets go of
its source once the source has an outcome, so reference counting frees both.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["Relay"]

T = TypeVar("T")


class Relay(Future[T]):
    """A future whose owner answers it from a *source* future; cancelling it cancels the source.

    The owner adds its own done-callback to the source, which may refer to this relay: the
    relay lets go of the source once the source has an outcome, so no cycle remains. The
    source is given at creation or, when it comes later, to `follow`.
    """

    def __init__(self, source: Future[Any] | None = None) -> None:
        super().__init__()
        self._source: Future[Any] | None = None
        if source is not None:
            self.follow(source)

    def follow(self, source: Future[Any]) -> None:
        """From now on, cancelling this relay cancels ``source`` (at once if it already was)."""
        self._source = source
        source.add_done_callback(self._forget)
        if self.cancelled():
            source.cancel()

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        source, self._source = self._source, None
        if source is not None:
            source.cancel()
        return True

    def _forget(self, source: Future[Any]) -> None:
        self._source = None
