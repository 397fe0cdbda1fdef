"""Which item each of ``map``'s outcomes belongs to: ``key=`` without a journal, and ``with_keys``.

An unordered map gives results as they complete, so the caller cannot line them up with its
items; a failed item's error is only useful if it says which item failed. `ItemKeys` names each
item as ``map`` reads it (its key, or its position when no ``key=`` was given) and wraps the
submit so that every error carries that name and, with ``with_keys``, every outcome arrives as
a ``(name, outcome)`` pair. Failures become pairs too when ``return_exceptions`` is set, so the
window never has to tell a paired result from a bare error.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from .errors import ConfigError, ItemError
from .relay import Relay

__all__ = ["ItemKeys"]

Name = str | int
Submit = Callable[[Any, int], "Future[Any]"]


class ItemKeys:
    """Names ``map``'s items in the order they are read.

    Args:
        key: a function of the item, or keys aligned with the items (each made a ``str``, as the
            journal does); None names each item by its position (an ``int``).
        pair: outcomes become ``(name, outcome)`` pairs.
        return_exceptions: with ``pair``, a failure becomes ``(name, error)`` instead of raising.
    """

    def __init__(
        self, key: Callable[[Any], Any] | Iterable[Any] | None, *, pair: bool, return_exceptions: bool
    ) -> None:
        self._key_fn = key if callable(key) else None
        self._keys = iter(key) if key is not None and not callable(key) else None
        self._pair = pair
        self._return_exceptions = return_exceptions
        self._names: dict[int, Name] = {}
        self._unread: deque[str] | None = None
        """The names as strings, kept only once a journal asked for them (`journal_keys`): it
        reads each one as it claims the item; without a journal nobody would, and they would
        pile up, one per item of the map."""

    def feed(self, items: Iterator[Any]) -> Iterator[Any]:
        """``items``, each named as it passes (wrap the items before anything else reads them)."""
        for index, item in enumerate(items):
            name = self._name(item, index)
            self._names[index] = name
            if self._unread is not None:
                self._unread.append(str(name))
            yield item

    def journal_keys(self) -> Iterator[str]:
        """The same names as strings, for the journal: it reads one per item it has been fed, so
        the sequence (or the key function) is consumed once, here. Call it before `feed` runs."""
        self._unread = deque()
        return iter(self._unread.popleft, None)  # never exhausted: one name per item fed so far

    def submit(self, submit: Submit) -> Submit:
        """``submit`` whose futures name their item: errors carry the key, pairs if asked."""

        def named(value: Any, index: int) -> Future[Any]:
            name = self._names.pop(index)
            return _Named(submit(value, index), name, pair=self._pair, return_exceptions=self._return_exceptions)

        return named

    def _name(self, item: Any, index: int) -> Name:
        if self._key_fn is not None:
            return str(self._key_fn(item))
        if self._keys is not None:
            try:
                return str(next(self._keys))
            except StopIteration:
                raise ConfigError(f"map got more items than keys (key= ran out at item {index})") from None
        return index


class _Named(Relay[Any]):
    """The future ``map`` holds for a named item: ``inner``'s outcome, with the item's name."""

    def __init__(self, inner: Future[Any], name: Name, *, pair: bool, return_exceptions: bool) -> None:
        super().__init__(inner)
        self._name = name
        self._pair = pair
        self._return_exceptions = return_exceptions
        inner.add_done_callback(self._landed)

    def _landed(self, inner: Future[Any]) -> None:
        if inner.cancelled():
            self.cancel()
            return
        if not self.set_running_or_notify_cancel():
            return
        error = inner.exception()
        if isinstance(error, ItemError) and isinstance(self._name, str):
            error.key = self._name
        if error is None:
            self.set_result((self._name, inner.result()) if self._pair else inner.result())
        elif self._pair and self._return_exceptions and isinstance(error, ItemError):
            self.set_result((self._name, error))
        else:
            self.set_exception(error)
