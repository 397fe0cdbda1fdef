"""The conformance suite runs each behavioural test on every backend; Ray starts once per session.

The Ray instance is logical: ``num_cpus=4`` on this 2-core machine lets the tests' graphs
(up to four single-CPU replicas) be placed, as the local backend shares cores between them.
"""

from __future__ import annotations

import os

import psutil
import pytest

from tests.conftest import leak_check

BACKENDS = ["local", "ray"]


@pytest.fixture(scope="session")
def ray_session():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a test cluster on loopback needs no token
    yield ray
    ray.shutdown()


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The backend name; for "ray", the session's Ray instance is up (engines join it). It is
    started again if a multi-node test shut it down to run its own cluster."""
    if request.param == "ray":
        ray = request.getfixturevalue("ray_session")
        if not ray.is_initialized():
            ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    return request.param


@pytest.fixture(autouse=True)
def no_leaked_children():
    """As in tests/conftest.py, but Ray's own daemons and idle pooled workers are not ours: only
    parapipe's worker processes and actors must be gone after each test."""
    yield from leak_check(_is_ours, timeout=15)


def _is_ours(p: psutil.Process) -> bool:
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return False
    if "ray::" in cmd or "/ray/" in cmd or "raylet" in cmd or "gcs_server" in cmd:
        return "ReplicaActor" in cmd
    return "resource_tracker" not in cmd and "forkserver" not in cmd
