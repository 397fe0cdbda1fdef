"""The job manager in process, with a real engine: how jobs reach the engine and what the journal
records of them (no HTTP server, so nothing depends on timing)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import parapipe as pp
from parapipe.journal import Journal, State
from parapipe.service.jobs import Admission, JobManager

from . import _job_stages as J


async def _run_jobs(engine: pp.Engine, journal: Journal, items: list[Any]) -> list[str]:
    """Submit every item as a job before the dispatcher runs, then wait for them all; the
    manager is closed (its writer thread stops) while the journal is still open."""
    jobs = JobManager(journal, Admission(10_000))
    keys = [jobs.submit(item, lambda: 1.0) for item in items]
    jobs.start(engine)
    try:
        records = [await jobs.wait(key, 120) for key in keys]
        assert all(r.state is State.DONE for r in records), [r.state for r in records]
    finally:
        await jobs.stop()
        jobs.close()
    return keys


def test_jobs_submitted_together_reach_a_batched_stage_in_full_batches(tmp_path: Path) -> None:
    with pp.Engine(J.Collect()) as engine:
        asyncio.run(_run_jobs(engine, Journal(tmp_path / "jobs.db", run="service"), list(range(256))))
        batches = engine.stats()["collect"]["batches"]
    assert batches["items"] == 256
    assert batches["mean_size"] >= 64, f"jobs reached the stage a few at a time: {batches}"


@pytest.mark.timeout(120)
def test_a_job_whose_worker_is_killed_once_is_retried_and_both_attempts_are_logged(tmp_path: Path) -> None:
    marker = str(tmp_path / "died")
    db = tmp_path / "jobs.db"
    with pp.Engine(pp.stage(J.die_once), retries=2) as engine:
        (key,) = asyncio.run(_run_jobs(engine, Journal(db, run="service"), [marker]))
    with Journal(db, run="service") as journal:
        record = journal.get(key)
        log = journal.attempt_log(key)
    assert record is not None and record.result == "survived"
    assert record.attempts == 2
    assert [entry["state"] for entry in log] == ["interrupted", "done"]
