"""Stages of the in-process job tests; module level so spawned workers can import them."""

from __future__ import annotations

import os
from typing import Any

import parapipe as pp


class Collect(pp.Stage):
    """A batched stage that answers each item with the size of the batch it came in."""

    name = "collect"
    batch_size = 128
    batch_wait = 30.0  # a batch that does not fill would fail the test by its slowness, not pass it

    def process_batch(self, items: list[Any]) -> list[int]:
        return [len(items)] * len(items)


def die_once(marker: str) -> str:
    """Kills its own worker the first time it sees ``marker`` (a path it then creates)."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), 9)
    return "survived"
