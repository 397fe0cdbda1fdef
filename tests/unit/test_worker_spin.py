"""An idle worker polls its pipe briefly before it sleeps (`config.spin_seconds`), so a caller
that sends again right after its answer does not pay for waking a sleeping process."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

import parapipe as pp
from parapipe.config import DEFAULT_SPIN_US, spin_seconds
from parapipe.errors import ConfigError
from parapipe.worker.child import _spinner


def _noop(x: int) -> int:
    return x


def test_spin_defaults_and_reads_microseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARAPIPE_SPIN_US", raising=False)
    assert spin_seconds() == DEFAULT_SPIN_US / 1e6
    monkeypatch.setenv("PARAPIPE_SPIN_US", "0")
    assert spin_seconds() == 0.0
    monkeypatch.setenv("PARAPIPE_SPIN_US", " 50 ")
    assert spin_seconds() == pytest.approx(50e-6)


@pytest.mark.parametrize("raw", ["fast", "-1", "2e6", "nan"])
def test_a_bad_spin_fails_the_engine_start_saying_what_to_write(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("PARAPIPE_SPIN_US", raw)
    with pytest.raises(ConfigError, match=r"PARAPIPE_SPIN_US.*microseconds"):
        pp.Engine(pp.stage(_noop)).start()


def test_the_spinner_polls_for_its_whole_time_when_nothing_arrives() -> None:
    here, _there = multiprocessing.Pipe()  # the other end stays open: a closed one reads as ready
    spin = _spinner(here, 0.05)
    t0 = time.perf_counter()
    spin()
    assert time.perf_counter() - t0 >= 0.05  # without the spin it returns at once


def test_the_spinner_returns_as_soon_as_a_message_arrives() -> None:
    here, there = multiprocessing.Pipe()
    spin = _spinner(here, 600.0)
    polling = threading.Thread(target=spin, daemon=True)
    polling.start()
    there.send_bytes(b"task")
    polling.join(timeout=30)
    assert not polling.is_alive()  # it saw the message; a 600 s spin would still be running
    assert here.recv_bytes() == b"task"  # and left it for recv_bytes


def test_a_message_already_waiting_costs_no_spin() -> None:
    here, there = multiprocessing.Pipe()
    there.send_bytes(b"task")
    spin = _spinner(here, 600.0)
    done = threading.Event()
    threading.Thread(target=lambda: (spin(), done.set()), daemon=True).start()
    assert done.wait(30)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_a_worker_that_answered_keeps_polling_then_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARAPIPE_SPIN_US", "1000000")  # the most allowed: one second
    with pp.Engine(pp.stage(_noop)) as engine:
        pid = engine.workers()[0]["pid"]
        engine.submit(1).result(timeout=60)
        assert _state(pid) == "R"  # polling (runnable), not asleep in recv: the spin is on
        deadline = time.monotonic() + 30
        while _state(pid) != "S":  # the spin ends and the worker sleeps in recv_bytes
            assert time.monotonic() < deadline, "the worker never went to sleep"


def test_spin_off_the_worker_sleeps_in_recv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARAPIPE_SPIN_US", "0")
    with pp.Engine(pp.stage(_noop)) as engine:
        pid = engine.workers()[0]["pid"]
        engine.submit(1).result(timeout=60)
        deadline = time.monotonic() + 30
        while _state(pid) != "S":
            assert time.monotonic() < deadline, "the worker never went to sleep"


def test_workers_answer_with_spin_on_and_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw in ("0", "100000"):
        monkeypatch.setenv("PARAPIPE_SPIN_US", raw)
        with pp.Engine(pp.stage(_noop, replicas=2)) as engine:
            assert [engine.submit(i).result(timeout=60) for i in range(50)] == list(range(50))
            assert list(engine.map(range(2000))) == list(range(2000))
