"""`Job` builds its future's condition only for a caller that blocks: every way of waiting on a
future, from any thread, still sees the outcome, however the two race."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from parapipe.scheduler import Job

_DEADLINE = 10.0


def blocked(job: Job) -> bool:
    """True once some thread sleeps in the job's ``result()`` or condition (so its outcome must
    wake it)."""
    cond = job._cond
    return bool(job._gates) or (cond is not None and bool(cond._waiters))  # type: ignore[attr-defined]


def until(predicate: Callable[[], bool]) -> None:
    """Spin on a state change of another thread (no clock involved but the give-up deadline)."""
    give_up = time.monotonic() + _DEADLINE
    while not predicate():
        assert time.monotonic() < give_up, "the other thread never got there"


def in_thread(fn: Callable[[], Any]) -> cf.Future[Any]:
    out: cf.Future[Any] = cf.Future()

    def run() -> None:
        try:
            out.set_result(fn())
        except BaseException as exc:  # handed to the test
            out.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return out


def test_a_job_nobody_waits_for_builds_no_condition() -> None:
    job = Job(0)
    seen: list[Any] = []
    job.add_done_callback(lambda f: seen.append(f.result()))
    job.finish(True, 42)
    assert job.done() and not job.cancelled()
    assert job.result() == 42 and job.exception() is None and seen == [42]
    assert job._cond is None


def test_result_blocked_in_another_thread_is_woken_by_finish() -> None:
    job = Job(0)
    waiter = in_thread(lambda: job.result(timeout=_DEADLINE))
    until(lambda: blocked(job))
    job.finish(True, "v")
    assert waiter.result(timeout=_DEADLINE) == "v"


def test_an_error_reaches_a_blocked_result_and_exception() -> None:
    job = Job(3)
    waiter = in_thread(lambda: job.exception(timeout=_DEADLINE))
    until(lambda: blocked(job))
    job.finish(False, ValueError("bad"))
    assert isinstance(waiter.result(timeout=_DEADLINE), ValueError)
    with pytest.raises(ValueError, match="bad"):
        job.result()


def test_result_with_a_timeout_times_out_while_pending() -> None:
    job = Job(0)
    with pytest.raises(cf.TimeoutError):
        job.result(timeout=0)
    job.finish(True, 1)
    assert job.result(timeout=0) == 1


def test_wait_and_as_completed_see_jobs_finished_from_another_thread() -> None:
    first, second, plain = Job(0), Job(1), cf.Future[Any]()
    waiter = in_thread(lambda: cf.wait([first, second, plain], timeout=_DEADLINE, return_when=cf.FIRST_COMPLETED))
    until(lambda: bool(first._waiters) and bool(second._waiters))
    second.finish(True, "two")
    done, not_done = waiter.result(timeout=_DEADLINE)
    assert done == {second} and not_done == {first, plain}
    order = in_thread(lambda: [f.result() for f in cf.as_completed([first, second, plain], timeout=_DEADLINE)])
    until(lambda: bool(first._waiters))
    first.finish(True, "one")
    until(lambda: bool(plain._waiters))
    plain.set_result("three")
    assert order.result(timeout=_DEADLINE) == ["two", "one", "three"]


def test_callbacks_added_before_and_after_the_outcome_each_run_once_and_errors_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = Job(0)
    seen: list[str] = []
    job.add_done_callback(lambda f: seen.append("before"))
    job.add_done_callback(lambda f: 1 / 0)
    job.finish(True, None)
    job.add_done_callback(lambda f: seen.append("after"))
    assert seen == ["before", "after"]
    assert "exception calling callback" in caplog.text


def test_a_cancelled_job_wakes_its_waiters_and_ignores_its_late_result() -> None:
    ended: list[Job] = []
    job = Job(0, on_end=ended.append)
    waiter = in_thread(lambda: cf.wait([job], timeout=_DEADLINE))
    until(lambda: bool(job._waiters))
    assert job.cancel()
    done, _ = waiter.result(timeout=_DEADLINE)
    assert done == {job} and job.cancelled() and ended == [job]
    job.finish(True, "late")
    with pytest.raises(cf.CancelledError):
        job.result()
    with pytest.raises(cf.InvalidStateError):
        job.set_result("again")
    assert ended == [job]


def test_a_finished_job_cannot_be_cancelled_or_set_twice() -> None:
    job = Job(0)
    job.finish(True, 1)
    job.finish(True, 2)  # a duplicate outcome (e.g. a retried attempt's answer) is ignored
    assert not job.cancel() and job.result() == 1
    with pytest.raises(cf.InvalidStateError):
        job.set_exception(ValueError())


def test_asyncio_awaits_a_job_finished_by_another_thread() -> None:
    job = Job(0)

    async def main() -> Any:
        wrapped = asyncio.wrap_future(job)  # its done-callback is registered before the outcome
        in_thread(lambda: job.finish(True, 7))
        return await wrapped

    assert asyncio.run(main()) == 7


def test_many_threads_racing_result_and_finish_all_see_the_outcome() -> None:
    for _ in range(200):
        job = Job(0)
        go = threading.Barrier(5)

        def wait_for(job: Job = job, go: threading.Barrier = go) -> Any:
            go.wait()
            return job.result(timeout=_DEADLINE)

        waiters = [in_thread(wait_for) for _ in range(4)]
        go.wait()
        job.finish(True, "x")
        assert [w.result(timeout=_DEADLINE) for w in waiters] == ["x"] * 4


def test_a_result_blocked_in_another_thread_is_woken_by_cancel() -> None:
    job = Job(0)
    waiter = in_thread(lambda: job.result(timeout=_DEADLINE))
    until(lambda: blocked(job))
    assert job.cancel()
    with pytest.raises(cf.CancelledError):  # not a TimeoutError after the deadline
        waiter.result(timeout=_DEADLINE)


def test_a_timed_out_result_leaves_no_gate_behind_and_a_later_one_sees_the_outcome() -> None:
    job = Job(0)
    with pytest.raises(cf.TimeoutError):
        job.result(timeout=0.01)
    assert job._gates == []
    job.finish(False, KeyError("k"))
    with pytest.raises(KeyError):
        job.result(timeout=0.01)
