"""`RetryPolicy.answered`: a task whose worker answered with an error is retried or failed for
good, by the same rules as one whose worker died. Pure: no processes."""

from __future__ import annotations

import pytest

import parapipe as pp
from parapipe.worker.dispatch import Task
from parapipe.worker.protocol import ExcInfo, timed_out
from parapipe.worker.retry import RetryPolicy


class _Job:
    finished = False

    def __init__(self) -> None:
        self.retries = 0

    def on_retry(self) -> None:
        self.retries += 1


def _task() -> tuple[Task, _Job]:
    job = _Job()
    return Task("item", lambda ok, v: None, job=job), job


def test_a_timeout_the_worker_measured_fails_as_task_timeout_unless_retry_on_lists_it() -> None:
    task, job = _task()
    retry, final = RetryPolicy(2, ()).answered([(task, timed_out(3.0, "cancelled"))], stage="fetch", timeout=3.0)
    assert retry == [] and job.retries == 0
    [(failed, ok, error)] = final
    assert failed is task and not ok
    assert isinstance(error, pp.TaskTimeout) and (error.stage, error.timeout, error.attempts) == ("fetch", 3.0, 1)

    task, job = _task()
    policy = RetryPolicy(1, (pp.TaskTimeout,))
    assert policy.answered([(task, timed_out(3.0, "cancelled"))], stage="fetch", timeout=3.0) == ([task], [])
    assert job.retries == 1, "the job hears of the retry (the journal records the attempt)"
    retry, [(_, _, error)] = policy.answered([(task, timed_out(3.0, "cancelled"))], stage="fetch", timeout=3.0)
    assert retry == [] and isinstance(error, pp.TaskTimeout) and error.attempts == 2


@pytest.mark.parametrize("retryable", [False, True])
def test_a_stage_exception_is_retried_only_when_retry_on_listed_it(retryable: bool) -> None:
    task, job = _task()
    info = ExcInfo("ConnectionError", "refused", "Traceback ...", retryable=retryable)
    retry, final = RetryPolicy(2, ()).answered([(task, info)], stage="fetch", timeout=None)
    if retryable:
        assert (retry, final, job.retries) == ([task], [], 1)
        return
    [(_, ok, error)] = final
    assert retry == [] and not ok and isinstance(error, pp.StageError)
    assert (error.stage, error.exc_type, str(error.message)) == ("fetch", "ConnectionError", "refused")
