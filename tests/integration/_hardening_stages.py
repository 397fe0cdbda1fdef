"""Stages for test_hardening: items and results that fail to (un)pickle in unusual places."""

from __future__ import annotations

import os
from typing import Any

import parapipe as pp

PARENT_PID_ENV = "PARAPIPE_TEST_PARENT_PID"


def nest(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def echo(item: Any) -> Any:
    return item


def deep_result(depth: int) -> Any:
    """A result that pickles on its own, near the recursion limit, but maybe not inside a message."""
    return nest(depth)


def _load_only_in_worker() -> str:
    if str(os.getpid()) == os.environ.get(PARENT_PID_ENV):
        raise ValueError("this value cannot be unpickled in the parent")
    return "loaded"


def _load_only_in_parent() -> str:
    if str(os.getpid()) != os.environ.get(PARENT_PID_ENV):
        raise ValueError("this value cannot be unpickled in a worker")
    return "loaded"


class WorkerUnloadable:
    """Pickles in the parent; unpickles only there, never in a worker."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_load_only_in_parent, ())


class Unloadable:
    """Pickles everywhere; unpickles everywhere but in the test's own (parent) process."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_load_only_in_worker, ())


class UnloadableResult(pp.Stage):
    name = "unloadable"
    retries = 0

    def process(self, item: Any) -> Any:
        return Unloadable() if item == "bad" else item
