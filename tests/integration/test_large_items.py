"""Items bigger than a socket buffer must never deadlock a reader thread against its worker."""

from __future__ import annotations

import parapipe as pp

from . import _stages as S


def test_many_concurrent_large_items_through_a_pipeline():
    graph = pp.Pipeline(S.blob, pp.stage(S.pass_blob), pp.stage(S.pass_blob).options(name="again"))
    with pp.Engine(graph) as engine:
        futures = [engine.submit(i) for i in range(24)]
        out = [f.result(60) for f in futures]
    assert [o[:1] for o in out] == [bytes([i % 256]) for i in range(24)]
    assert all(len(o) == 300_000 for o in out)
