"""A real multi-node Ray cluster on this machine: a head and two worker nodes, each its own
raylet with one CPU (`ray.cluster_utils.Cluster`)."""

from __future__ import annotations

import time
from typing import Any

import pytest

import parapipe as pp

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")


def where(item: int) -> tuple[int, str]:
    """The item, and the Ray node of the actor that handled it, read from inside the actor."""
    sum(range(200_000))  # some work: both replicas hold items when the node goes
    return item, ray.get_runtime_context().get_node_id()


@pytest.fixture
def cluster(ray_session):
    if ray.is_initialized():
        ray.shutdown()  # the session's single-node instance; the conformance fixture restarts it
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_replicas_on_different_nodes_and_a_node_lost_mid_map(cluster):
    cluster, nodes = cluster
    by_id = {n.node_id: n for n in nodes}
    out: list[Any] = []
    with pp.Engine(pp.stage(where, replicas=2), backend="ray", retries=5) as engine:
        placed = {w["node"] for w in engine.workers()}
        assert len(placed) == 2, "each node has one CPU: two replicas need two nodes"
        victim = next(by_id[n] for n in placed if n in by_id)  # a worker node (the head cannot go)
        for i, result in enumerate(engine.map(range(300), max_inflight=4)):
            out.append(result)
            if i == 30:
                cluster.remove_node(victim, allow_graceful=False)
        # An actor of the removed raylet may live on for a moment (its process is on this same
        # machine) and answer a direct call: wait until every replica reports a live node.
        rows = _relocated(engine, victim.node_id)
        last = engine.run(300, timeout=120)  # the stage still answers after the loss
        restarts = engine.stats()["where"]["restarts"]
    assert [item for item, _ in out] == list(range(300)), "every item answered once, in order"
    assert victim.node_id in {node for _, node in out}, "the lost node held a replica that answered items"
    assert last[0] == 300 and last[1] != victim.node_id
    assert restarts >= 1, "the replica on the lost node was restarted, and counted"
    assert len(rows) == 2 and all(w["node"] != victim.node_id for w in rows), rows


def _relocated(engine: pp.Engine, gone: str) -> list[dict[str, Any]]:
    """The worker rows once every replica is ready on a live node: a replica whose call failed
    is restarted by the pool; one that Ray restarted while idle reports its new node with its
    next answer, so each round submits four items at once (a few ms each: least-loaded
    dispatch spreads them over both replicas); either way, within a deadline."""
    deadline = time.monotonic() + 60
    while True:
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        rows = engine.workers()
        if all(w["state"] == "ready" and w["node"] in alive and w["node"] != gone for w in rows):
            return rows
        assert time.monotonic() < deadline, f"replicas not relocated to live nodes: {rows}"
        for future in [engine.submit(i) for i in range(4)]:
            future.result(timeout=60)
