"""Progress bars for ``map(progress=True)``, drawn with tqdm (items/s included)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["NO_BAR", "progress_bar"]


class _NoBar:
    def update(self, n: int = 1) -> None:
        """Nothing to draw."""


NO_BAR = _NoBar()


@contextlib.contextmanager
def progress_bar(progress: bool | str, total: int | None, unit: str = "item") -> Iterator[Any]:
    """A tqdm bar when ``progress`` is truthy (a string becomes its description), else a no-op."""
    if not progress:
        yield NO_BAR
        return
    from tqdm.auto import tqdm

    desc = progress if isinstance(progress, str) else "parapipe"
    bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
