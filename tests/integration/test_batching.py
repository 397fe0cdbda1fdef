"""Dynamic batching: full batches go at once, a lone item waits at most batch_wait."""

from __future__ import annotations

import time

import pytest

import parapipe as pp

from . import _stages as S

TIMEOUT = 60


def test_batches_fill_to_batch_size_under_load():
    with pp.Engine(S.BatchProbe()) as engine:
        futures = [engine.submit(i) for i in range(64)]
        out = [f.result(TIMEOUT) for f in futures]
        hist = engine.stats()["BatchProbe"]["batches"]
    assert [r["item"] for r in out] == list(range(64))
    sizes = [r["size"] for r in out]
    # batch_wait is 5 s: only full batches can go before it, and the first lone item may not
    assert sizes.count(8) >= 56, sizes
    assert hist["items"] == 64


def test_lone_item_waits_batch_wait_from_its_arrival():
    with pp.Engine(S.BatchProbe().options(batch_wait=0.3)) as engine:
        engine.run(-1, timeout=TIMEOUT)
        sent = time.monotonic()
        r = engine.run(0, timeout=TIMEOUT)
    assert r["size"] == 1
    waited = r["start"] - sent
    assert 0.25 <= waited < 5.0, waited


def test_batch_cost_counts_custom_units():
    probe = _Costly().options(batch_size=10)
    with pp.Engine(probe) as engine:
        out = [f.result(TIMEOUT) for f in [engine.submit(i) for i in range(40)]]
    assert max(r["size"] for r in out) <= 2  # each item costs 5 of the 10 units


class _Costly(S.BatchProbe):
    def batch_cost(self, item):
        return 5.0


def test_failing_batch_fails_all_its_items_without_fallback():
    with pp.Engine(S.BatchProbe().options(batch_wait=0.2)) as engine:
        futures = [engine.submit(x) for x in ("a", "bad", "c")]
        errors = [f.exception(TIMEOUT) for f in futures]
    assert all(isinstance(e, pp.StageError) and "spoils" in str(e) for e in errors)


def test_batch_fallback_isolates_the_bad_item():
    with pp.Engine(S.BatchProbe().options(batch_wait=0.2, batch_fallback=True)) as engine:
        out = list(engine.map(["a", "bad", "c"], return_exceptions=True))
    assert out[0]["item"] == "a" and out[2]["item"] == "c"
    assert isinstance(out[1], pp.StageError) and out[1].exc_type == "ValueError"


def test_wrong_result_count_is_a_clear_error():
    with pp.Engine(S.BatchProbe().options(batch_wait=0.1)) as engine, pytest.raises(pp.StageError) as info:
        engine.run("short", timeout=TIMEOUT)
    assert "BatchSizeMismatch" in info.value.exc_type and "exactly one result per item" in str(info.value)


def test_batching_inside_parallel_and_pipeline():
    graph = pp.Pipeline(S.add_one, pp.Parallel(batch=S.BatchProbe().options(batch_wait=0.05), sq=S.square))
    with pp.Engine(graph) as engine:
        out = list(engine.map(range(50)))
    assert [r["batch"]["item"] for r in out] == [i + 1 for i in range(50)]
    assert [r["sq"] for r in out] == [(i + 1) ** 2 for i in range(50)]


def test_a_cancelled_item_never_joins_a_batch():
    """Item 3 fails in its other branch while it waits for a batch (a minute: only filling
    releases one). Item 4 fills its batch, which goes without it; 5 and 6 fill the next.

    The probe branch comes first, so item 3 is in the batch queue before its failing branch is
    even submitted (branches are submitted in order, each queued at once): on a loaded machine
    the failure could otherwise land first and 3 would never reach the queue."""
    probe = S.BatchProbe().options(batch_size=2, batch_wait=60.0)
    graph = pp.Parallel(probe=probe, check=pp.stage(S.fail_on_three))
    with pp.Engine(graph) as engine:
        doomed = engine.submit(3)
        with pytest.raises(pp.StageError):
            doomed.result(TIMEOUT)
        out = [f.result(TIMEOUT)["probe"] for f in [engine.submit(4), engine.submit(5), engine.submit(6)]]
        hist = engine.stats()["BatchProbe"]["batches"]
    assert [(r["item"], r["size"]) for r in out] == [(4, 1), (5, 2), (6, 2)]
    assert hist["items"] == 3 and hist["batches"] == 2
