"""The engine's promises, checked on every backend: a graph and its results do not depend on
where its replicas run. Stages are module level so workers and actors can import them."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest

import parapipe as pp
from tests.integration import _stages as S
from tests.integration._driver_kill import kill_then_rerun

TIMEOUT = 60
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Rendezvous(pp.Stage):
    """Opens a FIFO: the open returns only once another replica opened its other end, so both
    were running at the same time (no sleep, no shared memory between hosts needed)."""

    def __init__(self, path: str, mode: str, name: str, only: Any = None) -> None:
        self.path, self.mode, self.name, self.only = path, mode, name, only

    def process(self, item: Any) -> dict[str, Any]:
        if self.only is None or item == self.only or (isinstance(item, dict) and item.get("item") == self.only):
            open(self.path, self.mode).close()
        return {"item": item, "stage": self.name, "pid": os.getpid()}


class DieOnce(pp.Stage):
    """SIGKILLs its own process the first time it sees an item (a marker file remembers it)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def process(self, item: Any) -> Any:
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return item


class TagDone(pp.Stage):
    """Signals the test through a FIFO when it reaches the item it names, then holds there.

    The FIFO and the item are read from the environment in the *driver*, when the CLI imports
    this module, and travel with the stage: a Ray actor's environment is the cluster's, not
    the driver's."""

    def __init__(self) -> None:
        self.fifo = os.environ.get("PARAPIPE_TEST_FIFO")
        self.at = os.environ.get("PARAPIPE_TEST_SIGNAL_AT")

    def process(self, item: str) -> str:
        if self.fifo and item == self.at:
            with open(self.fifo, "w") as f:
                f.write("reached\n")
            threading.Event().wait()  # hold here until the test kills the driver
        return f"{item}-done"


signal_graph = pp.Pipeline(TagDone())


class PairUp(pp.Stage):
    """Item 0 opens a FIFO for writing, item 1 for reading: each open returns only once the
    other end is open, so with one replica both items ran in it at once."""

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, item: int) -> int:
        open(self.path, "w" if item == 0 else "r").close()
        return os.getpid()


class AsyncPair(pp.Stage):
    """``async def process``: each item sets its event and waits for the other's, on the
    replica's event loop, so both must be running at once."""

    def setup(self) -> None:
        self.seen = {0: asyncio.Event(), 1: asyncio.Event()}

    async def process(self, item: int) -> int:
        self.seen[item].set()
        await asyncio.wait_for(self.seen[1 - item].wait(), TIMEOUT)
        return os.getpid()


def env_probe(name: str) -> dict[str, Any]:
    import numpy  # noqa: F401 - loads OpenBLAS so its pool is reported
    from threadpoolctl import threadpool_info

    return {
        "value": os.environ.get(name),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "blas": [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"],
        "ctx_cpus": pp.current().cpus,
    }


def engine(graph: Any, backend: str, **kw: Any) -> pp.Engine:
    return pp.Engine(graph, backend=backend, **kw)


def test_setup_runs_once_per_replica(backend):
    with engine(S.Recorder().options(replicas=2), backend) as e:
        results = list(e.map(range(200)))
        pids = {w["pid"] for w in e.workers()}
    assert [r["item"] for r in results] == list(range(200))
    assert {r["setups"] for r in results} == {1}
    assert {r["pid"] for r in results} <= pids and len(pids) == 2


def test_items_only_reach_their_own_stage(backend):
    graph = pp.Pipeline(S.Recorder("a").options(name="a", replicas=2), S.pid_of)
    with engine(graph, backend) as e:
        by_stage: dict[str, set[int]] = {}
        for w in e.workers():
            by_stage.setdefault(w["stage"], set()).add(w["pid"])
        pids = list(e.map(range(50)))
    assert set(pids) <= by_stage["pid_of"] and not set(pids) & by_stage["a"]


def test_parallel_branches_overlap_and_merge(backend, tmp_path):
    fifo = str(tmp_path / "meet")
    os.mkfifo(fifo)
    graph = pp.Parallel(x=Rendezvous(fifo, "w", "x"), y=Rendezvous(fifo, "r", "y"))
    with engine(graph, backend) as e:
        out = e.run("item", timeout=TIMEOUT)
    assert out["x"]["item"] == out["y"]["item"] == "item" and out["x"]["pid"] != out["y"]["pid"]


def test_pipeline_overlaps_independent_items(backend, tmp_path):
    """Stage a holds item 1 until stage b runs item 0: only possible if items are pipelined."""
    fifo = str(tmp_path / "meet")
    os.mkfifo(fifo)
    graph = pp.Pipeline(Rendezvous(fifo, "w", "a", only=1), Rendezvous(fifo, "r", "b", only=0))
    with engine(graph, backend) as e:
        first, second = e.submit(0), e.submit(1)
        assert first.result(TIMEOUT)["stage"] == second.result(TIMEOUT)["stage"] == "b"


def test_concurrency_runs_several_items_in_one_replica_at_once(backend, tmp_path):
    fifo = str(tmp_path / "meet")
    os.mkfifo(fifo)
    with engine(PairUp(fifo).options(concurrency=2), backend) as e:
        futures = [e.submit(0), e.submit(1)]
        pids = {f.result(TIMEOUT) for f in futures}
    assert len(pids) == 1


def test_async_process_runs_items_on_one_event_loop_at_once(backend):
    with engine(AsyncPair().options(concurrency=2), backend) as e:
        futures = [e.submit(0), e.submit(1)]
        pids = {f.result(TIMEOUT) for f in futures}
    assert len(pids) == 1


def test_user_error_is_stage_error_with_the_remote_traceback(backend):
    with engine(pp.Pipeline(S.add_one, S.fail_on_three), backend) as e:
        with pytest.raises(pp.StageError) as info:
            e.run(2, timeout=TIMEOUT)
        assert e.run(3, timeout=TIMEOUT) == 4
    err = info.value
    assert err.stage == "fail_on_three" and err.exc_type == "ValueError"
    assert "three is not allowed" in str(err) and "fail_on_three" in err.traceback


def test_map_window_order_progress_and_return_exceptions(backend):
    with engine(S.fail_on_three, backend) as e:
        out = list(e.map(range(8), return_exceptions=True, max_inflight=3, progress="items"))
        unordered = sorted(e.map(range(20), ordered=False, return_exceptions=True), key=str)
    assert out[:3] == [0, 1, 2] and out[4:] == [4, 5, 6, 7]
    assert isinstance(out[3], pp.StageError) and out[3].index == 3
    assert len(unordered) == 20


def test_sigkill_mid_item_is_retried(backend, tmp_path):
    with engine(DieOnce(str(tmp_path / "died")), backend) as e:
        assert e.run("x", timeout=TIMEOUT) == "x"
        assert e.run("y", timeout=TIMEOUT) == "y"
        assert e.stats()["DieOnce"]["restarts"] == 1


def test_poison_item_fails_alone_with_worker_died(backend):
    with engine(pp.stage(S.kill_self, replicas=2), backend, retries=1) as e:
        out = list(e.map(["a", "die", "b", "c"], return_exceptions=True))
    assert out[0] == "a" and out[2:] == ["b", "c"]
    assert isinstance(out[1], pp.WorkerDied) and out[1].attempts == 2


def test_timeout_kills_and_restarts_the_replica(backend):
    with engine(S.Hang(), backend) as e:
        out = list(e.map(["a", "hang", "b"], return_exceptions=True))
        assert e.run("c", timeout=TIMEOUT) == "c"
        restarts = e.stats()["Hang"]["restarts"]
    assert out[0] == "a" and out[2] == "b" and restarts == 1
    assert isinstance(out[1], pp.TaskTimeout) and out[1].index == 1


def test_max_items_per_worker_retires_the_replica_without_failing_items(backend):
    with engine(S.Retiring(), backend) as e:
        pids = [e.run(i, timeout=TIMEOUT) for i in range(9)]
        assert e.stats()["Retiring"]["failed"] == 0
    assert len(set(pids)) == 3 and all(pids.count(p) == 3 for p in set(pids))


def test_passing_max_memory_fails_the_item_alone_and_says_so(backend, caplog):
    with caplog.at_level(logging.WARNING, logger="parapipe"), engine(S.MemoryHog(), backend) as e:
        out = list(e.map(["a", "hog", "b"], return_exceptions=True))
    assert out[0] == "a" and out[2] == "b"
    assert isinstance(out[1], pp.WorkerDied) and "max_memory" in str(out[1]) and out[1].attempts == 1
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "parapipe")
    assert "passed max_memory (0.39 GiB)" in text


def test_batches_are_formed_in_the_driver(backend):
    with engine(S.BatchProbe().options(batch_wait=0.5), backend) as e:
        futures = [e.submit(i) for i in range(16)]
        out = [f.result(TIMEOUT) for f in futures]
        batches = e.stats()["BatchProbe"]["batches"]
    assert [r["item"] for r in out] == list(range(16))
    assert max(r["size"] for r in out) > 1 and batches["items"] == 16


def test_setup_failure_fails_the_start(backend):
    with pytest.raises(pp.WorkerStartupError, match="model file is missing"):
        engine(S.BadSetup(), backend).start()


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.slow)], indirect=True)
def test_stage_whose_replacements_cannot_start_fails(backend, tmp_path):
    """On Ray, five fresh actors start and fail in a row (~40 s on a loaded 2-core machine)."""
    with engine(S.SetupOnce(str(tmp_path / "loaded")), backend) as e:
        os.kill(e.run(0, timeout=TIMEOUT), signal.SIGKILL)
        with pytest.raises(pp.StageFailed, match="failed to start"):
            e.run(1, timeout=TIMEOUT)


def test_thread_caps_and_the_stage_runtime_env_reach_the_replica(backend):
    probe = pp.stage(env_probe, runtime_env={"env_vars": {"PARAPIPE_PROBE": "yes"}})
    with engine(probe, backend) as e:
        out = e.run("PARAPIPE_PROBE", timeout=TIMEOUT)
    assert out["omp"] == "1" and set(out["blas"]) <= {1} and out["ctx_cpus"] == 1
    assert out["value"] == ("yes" if backend == "ray" else None)  # the local backend has no runtime env


def test_a_stage_s_nice_reaches_every_thread_of_its_replica(backend):
    with engine(S.Niceness().options(nice=7), backend) as e:
        out = e.run(1, timeout=TIMEOUT)
        rows = e.workers()
    assert min(out["nices"]) == 7, "every thread of the replica at nice 7 or nicer"
    # the thread that runs items and the one setup() started: Ray runs its task threads at a
    # nice of its own (RAY_worker_niceness, 15 by default), which a nice of 7 must not lower
    assert out["own"] == [7] if backend == "local" else min(out["own"]) >= 7
    assert [r["nice"] for r in rows] == [7]


def test_plan_and_workers_say_where_each_replica_runs(backend):
    with engine(pp.stage(S.square, replicas=2), backend) as e:
        rows = e.workers()
        plan = e.plan()
        e.run(3, timeout=TIMEOUT)
        stats = e.stats()["square"]
    assert len(rows) == 2 and all(r["pid"] and r["threads"] == 1 for r in rows)
    assert all(str(r["pid"]) in plan for r in rows)
    if backend == "ray":
        assert all(r["node"] and r["actor"] for r in rows) and "node" in plan
    assert stats["done"] == 1 and stats["latency_p50_s"] is not None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_journal_resume_after_a_driver_sigkill(backend, tmp_path):
    env = {}
    if backend == "ray":
        import ray

        env = {"PARAPIPE_BACKEND": "ray", "PARAPIPE_RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    lines = kill_then_rerun(tmp_path, "tests.conformance.test_backends:signal_graph", 200, env=env)
    keys = [line["key"] for line in lines]
    assert len(keys) == 200 and len(set(keys)) == 200
    assert all(line["result"] == f"{line['key']}-done" for line in lines)


def test_backend_from_the_environment_and_a_bad_name(monkeypatch):
    monkeypatch.setenv("PARAPIPE_BACKEND", "spark")
    with pytest.raises(pp.ConfigError, match="'local' or 'ray'"):
        pp.Engine(S.square)


def test_missing_ray_is_a_config_error_with_the_install_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(pp.ConfigError, match=r"pip install \"parapipe\[ray\]\""):
        pp.Engine(S.square, backend="ray")


@pytest.mark.parametrize("command", [["plan", "m:g"], ["run", "m:g", "--out", "o"], ["serve", "m:g"]])
def test_cli_backend_options_become_the_engine_defaults(monkeypatch, command):
    from parapipe.cli import _parser
    from parapipe.ray import apply_backend_arguments

    # setenv, not delenv: monkeypatch then removes what the command sets, so later tests get the
    # local backend again (delenv of an unset variable records nothing to undo).
    monkeypatch.setenv("PARAPIPE_BACKEND", "local")
    monkeypatch.setenv("PARAPIPE_RAY_ADDRESS", "")
    apply_backend_arguments(_parser().parse_args([*command, "--backend", "ray", "--ray-address", "auto"]))
    assert os.environ["PARAPIPE_BACKEND"] == "ray" and os.environ["PARAPIPE_RAY_ADDRESS"] == "auto"


def test_a_stage_defined_in_the_driver_script_runs_on_ray(ray_session, tmp_path):
    """An actor does not import the driver's __main__ (a spawned local worker does): the stage
    must travel by value."""
    if not ray_session.is_initialized():
        ray_session.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    script = tmp_path / "driver.py"
    script.write_text(
        "import parapipe as pp\n\n"
        "def double(x):\n    return 2 * x\n\n"
        "if __name__ == '__main__':\n"
        "    with pp.Engine(pp.stage(double), backend='ray') as e:\n"
        "        print(list(e.map(range(4))))\n"
    )
    env = {**os.environ, "PARAPIPE_RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "src"), ROOT, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[0, 2, 4, 6]"
