"""Stages for test_naming_and_errors; module level so spawned workers can import them."""

from __future__ import annotations

import os
from typing import Any

import parapipe as pp


class Nap(pp.Stage):
    """Says which worker served the item and under which stage name that worker runs."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def process(self, item: Any) -> dict[str, Any]:
        return {"tag": self.tag, "pid": os.getpid(), "stage": pp.current().stage}


def explode(x: Any) -> Any:
    raise ValueError(f"cannot take {x!r}")
