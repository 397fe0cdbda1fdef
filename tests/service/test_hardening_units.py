"""Issue 19 without a server: job states that cannot stall, Retry-After, limits of items and keys."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

import parapipe as pp
from parapipe.journal import Journal, State, Write
from parapipe.recovery import JournaledRunner
from parapipe.service import ServiceConfig
from parapipe.service.errors import BadRequest, ResultNotSerializable, public_error, scrub_paths
from parapipe.service.jobs import MAX_INTERRUPTIONS, Admission, JobManager
from parapipe.service.payloads import check_item, to_jsonable
from parapipe.service.runtime import retry_after_seconds


def _manager(tmp_path: Path) -> JobManager:
    return JobManager(Journal(tmp_path / "jobs.db", run="service"), Admission(8))


def test_a_job_running_in_the_journal_but_held_by_nobody_can_be_cancelled(tmp_path: Path) -> None:
    jobs = _manager(tmp_path)
    jobs.journal.add(["lost"], payloads=[1])
    jobs.journal.mark_running("lost")
    assert jobs.cancel("lost").state is State.CANCELLED
    jobs.close()


def test_a_job_interrupted_again_and_again_ends_failed_instead_of_resuming(tmp_path: Path) -> None:
    jobs = _manager(tmp_path)
    jobs.journal.add(["poison", "fresh"], payloads=[1, 2])
    for _ in range(MAX_INTERRUPTIONS):
        jobs.journal.mark_running("poison")
    jobs.journal.mark_running("fresh")
    assert jobs.resume() == 1
    record = jobs.get("poison")
    assert record.state is State.FAILED and record.error is not None and record.error["type"] == "JobInterrupted"
    jobs.close()


def test_retry_after_follows_the_queue_and_the_measured_service_time() -> None:
    stages = {"slow": {"done": 10, "failed": 0, "busy_s": 300.0}, "fast": {"done": 10, "failed": 0, "busy_s": 1.0}}
    workers = [{"stage": "slow"}, {"stage": "fast"}]
    assert retry_after_seconds(100, stages, workers) == 3000  # 100 queued x 30 s each
    assert retry_after_seconds(100, stages, [*workers, {"stage": "slow"}]) == 1500  # two workers
    assert retry_after_seconds(1024, stages, workers) == 3600  # capped at an hour
    assert retry_after_seconds(5, {}, []) == 1  # nothing measured yet


def test_item_limits() -> None:
    check_item([[{"a": ["ok"]}]])
    with pytest.raises(BadRequest, match="nested deeper"):
        check_item([[[0]]], max_depth=2)
    with pytest.raises(BadRequest, match="surrogate"):
        check_item({"k": ["\ud800"]})
    with pytest.raises(BadRequest, match="surrogate"):
        check_item({"\udfff": 1})


def test_results_that_no_encoder_takes_are_refused_as_such() -> None:
    deep: object = 0
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ResultNotSerializable, match="nested too deeply"):
        to_jsonable(deep)
    with pytest.raises(ResultNotSerializable, match="surrogate"):
        to_jsonable({"text": "\ud800"})


def test_keys_must_be_long_and_admin_keys_are_api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(pp.ConfigError, match="at least 16"):
        ServiceConfig(api_keys=["x"])
    monkeypatch.setenv("PARAPIPE_ADMIN_KEYS", "admin-0123456789abcdef")
    config = ServiceConfig(api_keys=["user-0123456789abcdef"])
    assert config.admin_keys == ("admin-0123456789abcdef",)
    assert set(config.api_keys) == {"user-0123456789abcdef", "admin-0123456789abcdef"}


def test_errors_shown_to_clients_carry_no_server_paths() -> None:
    message = "No such file or directory: '/srv/app/models/x.onnx' (File \"/usr/lib/python3.11/a.py\")"
    assert scrub_paths(message) == "No such file or directory: 'x.onnx' (File \"a.py\")"
    shown = public_error({"type": "E", "message": message, "traceback": "t", "stage": "s"})
    assert "/srv" not in shown["message"] and "traceback" not in shown


class _Fatal(BaseException):
    pass


class _DyingStore:
    """A job store whose writes end the writer thread (a bug below the runner's own handling)."""

    run = "t"
    lease = 60.0

    def add(self, keys: Any, *, payloads: Any = None) -> dict[str, Any]:
        return {}

    def renew(self) -> None:
        pass

    def apply(self, writes: Any) -> list[Any]:
        raise _Fatal("the store broke")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_journal_writer_that_stops_is_reported_not_silent() -> None:
    runner = JournaledRunner(_DyingStore(), lambda item, key, index, on_retry: Future())  # type: ignore[arg-type]
    done = threading.Event()
    runner._writer.put([Write("k", State.RUNNING)], lambda _: done.set())
    runner._writer._thread.join(30)
    assert runner.failure is not None and "the store broke" in runner.failure
    assert not done.is_set()


def test_a_job_dispatcher_that_stops_is_reported(tmp_path: Path) -> None:
    jobs = _manager(tmp_path)

    async def main() -> None:
        async def broken() -> None:
            raise RuntimeError("dispatcher bug")

        task = asyncio.get_running_loop().create_task(broken())
        task.add_done_callback(jobs._dispatcher_ended)
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert jobs.health() is not None and "dispatcher bug" in str(jobs.health())
    jobs.close()
