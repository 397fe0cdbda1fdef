"""The rules behind ``concurrency``, ``rate_limit`` and ``python=``: pure parts, no processes."""

from __future__ import annotations

import pytest

import parapipe as pp
from parapipe.config import parse_rate
from parapipe.plantree import format_plan, format_tree
from parapipe.resources import WorkerBudget
from parapipe.worker.dispatch import Dispatcher, Task
from parapipe.worker.ratelimit import RateLimit


class _Replica:
    def __init__(self) -> None:
        self.msgs = 0
        self.held = 0
        self.exclusive = False


def _task(i: int) -> Task:
    return Task(i, lambda ok, v: None)


def _echo(x):
    return x


@pytest.mark.parametrize(("text", "per_second"), [("20/s", 20.0), ("600/min", 10.0), ("3600/h", 1.0), (2.5, 2.5)])
def test_rate_limits_parse(text, per_second):
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("bad", ["20", "0/s", "x/s", -1, True])
def test_a_bad_rate_limit_is_a_config_error(bad):
    with pytest.raises(pp.ConfigError, match="rate_limit"):
        pp.stage(_echo, rate_limit=bad)


@pytest.mark.parametrize(("option", "bad"), [("concurrency", 0), ("python", ""), ("python", 3)])
def test_bad_environment_and_concurrency_options_are_config_errors(option, bad):
    with pytest.raises(pp.ConfigError, match=option):
        pp.stage(_echo, **{option: bad})


def test_the_bucket_lets_items_go_at_the_rate_and_catches_up_after_a_late_wake():
    bucket = RateLimit(10.0)
    assert bucket.available(0.0) == 2
    bucket.take(2, 0.0)
    assert bucket.available(0.05) == 0 and bucket.wait(0.05) == pytest.approx(0.05)
    assert bucket.available(0.15) == 1  # woke 50 ms late: one goes, and the schedule is kept
    bucket.take(1, 0.15)
    assert bucket.wait(0.15) == pytest.approx(0.05)


def test_a_rate_limited_dispatcher_sends_no_faster_than_the_limit_across_replicas():
    now = [0.0]
    d = Dispatcher(max_msgs=8, packing=False, concurrent=True, rate=RateLimit(10.0), clock=lambda: now[0])
    for i in range(10):
        d.put(_task(i))
    replicas = [_Replica(), _Replica()]
    assert sum(len(a.tasks) for a in d.assign(replicas)) == 2
    assert d.rate_timer() == pytest.approx(0.1)
    now[0] = 0.1
    assert sum(len(a.tasks) for a in d.assign(replicas)) == 1


def test_a_concurrent_dispatcher_fills_each_replica_to_its_concurrency_one_task_a_message():
    d = Dispatcher(max_msgs=3, packing=False, concurrent=True)
    d.cost = 10.0  # slow items: a serial stage would get one message each
    for i in range(10):
        d.put(_task(i))
    out = d.assign([_Replica(), _Replica()])
    assert len(out) == 6 and all(len(a.tasks) == 1 for a in out)


def test_a_retried_exception_does_not_take_a_concurrent_worker_alone():
    d = Dispatcher(max_msgs=3, packing=False, concurrent=True)
    retried = _task(0)
    retried.attempts = 1
    d.requeue([retried])
    d.put(_task(1))
    out = d.assign([_Replica()])
    assert [a.exclusive for a in out] == [False, False]


def test_the_plan_and_the_tree_name_a_stages_interpreter():
    budget = WorkerBudget("model", 0, 1, (0,))
    assert "/envs/b/bin/python" in format_plan([(budget, 42)], {"model": "/envs/b/bin/python"})
    assert "python" not in format_plan([(budget, 42)])
    row = {"stage": "model", "replica": 0, "pid": 42, "cores": (0,), "threads": 1, "python": "/envs/b/bin/python"}
    assert "python /envs/b/bin/python" in format_tree({"stage": "model"}, [row])
