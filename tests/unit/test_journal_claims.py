"""Claims and leases: several runners on one journal take each item once, on every backend."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from typing import Any

import pytest

from parapipe.journal import JournalError, State

WAIT = 60


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_claim_adds_new_keys_running_under_the_runners_lease(make: Any) -> None:
    clock = Clock()
    with make(owner="a", lease=10, clock=clock) as journal:
        assert journal.claim(["x", "y"]) == {}
        record = journal.get("x")
    assert (record.state, record.owner, record.lease_until, record.attempts) == (State.RUNNING, "a", 1010.0, 1)


def test_a_key_another_runner_holds_is_not_claimed_until_its_lease_expires(make: Any) -> None:
    clock = Clock()
    with make(owner="a", lease=10, clock=clock) as a, make(owner="b", lease=10, clock=clock) as b:
        a.claim(["x"])
        held = b.claim(["x", "y"])
        assert list(held) == ["x"] and held["x"].owner == "a"
        clock.now += 11
        assert b.claim(["x"]) == {}
        assert a.get("x").owner == "b" and a.get("x").attempts == 2
        assert [e["state"] for e in a.attempt_log("x")] == ["interrupted", "running"]
        with pytest.raises(JournalError, match="lease on it expired"):
            a.mark_done("x", 1)  # a's lease was taken over: its outcome must not count
        b.mark_done("x", 2)
    assert make().get("x").result == 2


def test_renew_keeps_the_lease_alive(make: Any) -> None:
    clock = Clock()
    with make(owner="a", lease=10, clock=clock) as a, make(owner="b", lease=10, clock=clock) as b:
        a.claim(["x"])
        clock.now += 8
        assert a.renew() == 1
        clock.now += 8
        assert list(b.claim(["x"])) == ["x"]


def test_finished_items_are_answered_not_claimed_and_failed_ones_only_when_asked(make: Any) -> None:
    with make(owner="a") as a, make(owner="b") as b:
        a.claim(["done", "failed"])
        a.mark_done("done", 1)
        a.mark_failed("failed", {"message": "x"}, retryable=False)
        left = b.claim(["done", "failed"])
        assert {k: r.state for k, r in left.items()} == {"done": State.DONE, "failed": State.FAILED}
        assert b.claim(["failed"], reclaim=lambda record: True) == {}
        assert [e["state"] for e in b.attempt_log("failed")] == ["failed", "running"]


def test_release_gives_back_what_the_runner_did_not_finish(make: Any) -> None:
    with make(owner="a") as a, make(owner="b") as b:
        a.add(["x", "y"], payloads=["x", "y"])
        a.claim(["x", "y"])
        a.mark_done("x", 1)
        assert a.release() == 1
        assert (a.get("y").state, a.get("y").owner) == (State.QUEUED, None)
        assert [r.key for r in b.claim_next(10)] == ["y"]
        assert b.get("y").attempts == 2
        assert [e["state"] for e in b.attempt_log("y")] == ["interrupted", "running"]


def test_claim_next_takes_queued_items_oldest_first_up_to_the_limit(make: Any) -> None:
    with make(owner="a") as a, make(owner="b") as b:
        a.add([f"k{i}" for i in range(5)], payloads=list(range(5)))
        assert [(r.key, r.payload) for r in a.claim_next(2)] == [("k0", 0), ("k1", 1)]
        assert [r.key for r in b.claim_next(10)] == ["k2", "k3", "k4"]
        assert b.claim_next(10) == []
        a.add(["no-payload"])  # a map's item: only that map runs it
        assert b.claim_next(10) == []


def test_a_dead_local_owner_leaves_its_items_claimable_at_once(make: Any) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = f"{socket.gethostname()}:{int(dead.stdout)}:gone"
    with make(owner=owner, lease=3600) as crashed, make(owner="b", lease=3600) as b:
        crashed.claim(["x"])
        crashed.add(["q"], payloads=["item"])
        assert b.claim(["x"]) == {}
        crashed.claim(["q"])
        assert [r.key for r in b.claim_next(10)] == ["q"]


def test_concurrent_claims_take_each_key_once(make: Any) -> None:
    keys = [f"k{i}" for i in range(300)]
    runners = [make(owner=f"r{n}") for n in range(3)]
    start = threading.Barrier(3, timeout=WAIT)
    taken: dict[str, list[str]] = {}

    def claim(journal: Any) -> None:
        start.wait()
        mine: list[str] = []
        for lo in range(0, len(keys), 25):
            chunk = keys[lo : lo + 25]
            held = journal.claim(chunk)
            mine += [k for k in chunk if k not in held]
        taken[journal.owner] = mine

    threads = [threading.Thread(target=claim, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    for runner in runners:
        runner.close()
    everything = [k for mine in taken.values() for k in mine]
    assert sorted(everything) == sorted(keys)
