"""The options a stage's Ray actors are created with (no Ray needed: `parapipe.ray.env` is plain)."""

from __future__ import annotations

import pytest

import parapipe as pp
from parapipe.ray.env import actor_options
from parapipe.resources import WorkerBudget


def square(x: int) -> int:
    return x * x


def budget(replica: int = 0, threads: int = 2) -> WorkerBudget:
    return WorkerBudget(stage="square", replica=replica, threads=threads, cores=())


@pytest.mark.parametrize(
    ("gpus", "replica", "expected"),
    [(None, 0, 0.0), (0.25, 0, 0.25), (0.5, 1, 0.5), (2, 0, 2.0), ([0, 1], 1, 1.0), ([[0, 1]], 0, 2.0)],
)
def test_num_gpus_is_the_replica_share_fractions_included(gpus, replica, expected):
    stage = pp.stage(square, gpus=gpus, replicas=2)
    assert actor_options(stage, budget(replica), {})["num_gpus"] == expected


def test_cpus_restarts_and_runtime_env_of_an_actor():
    stage = pp.stage(square, runtime_env={"pip": ["x"], "env_vars": {"OMP_NUM_THREADS": "3"}})
    opts = actor_options(stage, budget(threads=2), {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"})
    assert opts["num_cpus"] == 2 and opts["max_restarts"] == -1 and opts["max_task_retries"] == 0
    assert opts["runtime_env"]["pip"] == ["x"]
    assert opts["runtime_env"]["env_vars"] == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "2"}
