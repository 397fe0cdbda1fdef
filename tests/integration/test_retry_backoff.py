"""Retries of an exception listed in ``retry_on`` wait, doubling: a flaky service is not hammered."""

from __future__ import annotations

import itertools
from pathlib import Path

import parapipe as pp

from . import _retry_stages as R


def test_retry_on_waits_longer_before_each_attempt(tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    stage = pp.stage(R.flaky_twice, retries=3, retry_on=(ConnectionError,))
    with pp.Engine(stage) as engine:
        assert engine.run(log, timeout=60) == 3
    starts = [float(line) for line in Path(log).read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 2
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1, gaps  # worker.retry.backoff: 0.05 s, then 0.1 s
