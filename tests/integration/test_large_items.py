"""Items near or above a socket buffer must never deadlock a reader thread against its worker."""

from __future__ import annotations

import parapipe as pp

from . import _stages as S


def test_many_concurrent_items_just_under_the_pipe_limit_both_ways():
    """Every message goes through the socket (none through shared memory), two in flight per
    worker in each direction: the case `protocol.PIPE_MESSAGE_LIMIT` keeps from deadlocking."""
    graph = pp.Pipeline(
        S.near_pipe_limit, pp.stage(S.reverse_slowly, replicas=2), pp.stage(S.reverse_slowly).options(name="again")
    )
    with pp.Engine(graph) as engine:
        futures = [engine.submit(i) for i in range(200)]
        out = [f.result(60) for f in futures]
        stats = engine.stats()
    assert [o[-1:] for o in out] == [bytes([i % 256]) for i in range(200)]
    assert all(len(o) == S.NEAR_PIPE_LIMIT for o in out)
    assert all(row["shm_bytes_sent"] == 0 for row in stats.values())


def test_many_concurrent_shared_memory_items_through_a_pipeline():
    graph = pp.Pipeline(S.blob, pp.stage(S.pass_blob), pp.stage(S.pass_blob).options(name="again"))
    with pp.Engine(graph) as engine:
        futures = [engine.submit(i) for i in range(24)]
        out = [f.result(60) for f in futures]
    assert [o[:1] for o in out] == [bytes([i % 256]) for i in range(24)]
    assert all(len(o) == 300_000 for o in out)
