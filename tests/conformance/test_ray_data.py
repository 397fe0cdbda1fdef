"""On Ray, a large result goes from one stage's actor to the next through the object store: the
driver holds only a reference (`RefPacked`), owned by it, and reads the value for a final result."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import parapipe as pp

TIMEOUT = 60
SIZE = 1 << 18  # 2 MiB of float64: far above Ray's 100 KiB inline limit


class Make(pp.Stage):
    def process(self, item: int) -> dict[str, Any]:
        return {"item": item, "audio": np.full(SIZE, float(item))}


class Read(pp.Stage):
    """Reports what it received, small, so the driver never needs the array."""

    def process(self, item: dict[str, Any]) -> tuple[int, float, bool]:
        audio = item["audio"]
        return item["item"], float(audio.sum()), isinstance(audio, np.ndarray)


class Keep(pp.Stage):
    def process(self, item: dict[str, Any]) -> dict[str, Any]:
        return item


@pytest.fixture
def ray_up(ray_session):
    if not ray_session.is_initialized():
        ray_session.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    return ray_session


@pytest.fixture
def spy(monkeypatch):
    """Records, per stage, the type of each item the driver sends, and the stages' hosts."""
    from parapipe.ray import blobs, host

    sent: dict[str, list[type]] = {}
    hosts: dict[str, Any] = {}
    reads: list[int] = []
    send, start, unpack = host.RayHost.send, host.RayHost.start, blobs.RefPacked.unpack

    def spy_send(self: Any, r: Any, kind: int, tids: list[int], tasks: list[Any]) -> None:
        sent.setdefault(self._stage.stage_name, []).extend(type(t.item) for t in tasks)
        for hook in spy_hooks:
            hook(self._stage.stage_name, tasks)
        send(self, r, kind, tids, tasks)

    def spy_start(self: Any, owner: Any, budget: Any) -> Any:
        hosts[self._stage.stage_name] = self
        return start(self, owner, budget)

    def spy_unpack(self: Any) -> Any:
        reads.append(self.index)
        return unpack(self)

    spy_hooks: list[Any] = []
    monkeypatch.setattr(host.RayHost, "send", spy_send)
    monkeypatch.setattr(host.RayHost, "start", spy_start)
    monkeypatch.setattr(blobs.RefPacked, "unpack", spy_unpack)
    return sent, hosts, reads, spy_hooks


def test_large_results_go_actor_to_actor_without_the_driver_reading_them(ray_up, spy):
    from parapipe.ray.blobs import RefPacked

    sent, _, reads, _ = spy
    with pp.Engine(pp.Pipeline(Make(), Read()), backend="ray") as e:
        out = [e.run(i, timeout=TIMEOUT) for i in range(4)]
    assert out == [(i, float(i * SIZE), True) for i in range(4)]
    # the first large answer came back whole and switched the stage to split calls
    assert sent["Read"][0] is dict and sent["Read"][1:] == [RefPacked] * 3
    assert reads == []  # the driver never read an array


def test_a_large_final_result_is_the_array(ray_up, spy):
    _, _, reads, _ = spy
    with pp.Engine(pp.Pipeline(Make(), Keep()), backend="ray") as e:
        out = [e.run(i, timeout=TIMEOUT) for i in range(3)]
    assert [o["item"] for o in out] == [0, 1, 2]
    assert all(isinstance(o["audio"], np.ndarray) and o["audio"].shape == (SIZE,) for o in out)
    assert [float(o["audio"][0]) for o in out] == [0.0, 1.0, 2.0]
    assert len(reads) >= 2  # the split answers were read in the driver, as final results


def test_a_large_result_outlives_the_actor_that_made_it(ray_up, spy):
    """The producer is killed for good after it answered and before the next stage is sent the
    reference: the driver owns the object, so the next stage still reads it."""
    import ray

    from parapipe.ray.blobs import RefPacked

    sent, hosts, _, hooks = spy
    killed: list[Any] = []

    def kill_producer(stage: str, tasks: list[Any]) -> None:
        if stage == "Read" and not killed and any(type(t.item) is RefPacked for t in tasks):
            actor = hosts["Make"]._actors[0]
            ray.kill(actor, no_restart=True)
            with pytest.raises(ray.exceptions.RayActorError):
                ray.get(actor.describe.remote(), timeout=TIMEOUT)
            killed.append(actor)

    hooks.append(kill_producer)
    with pp.Engine(pp.Pipeline(Make(), Read()), backend="ray") as e:
        first = e.run(1, timeout=TIMEOUT)
        second = e.run(2, timeout=TIMEOUT)  # split: its result is read after its maker died
    assert killed and sent["Read"][-1] is RefPacked
    assert first == (1, float(SIZE), True) and second == (2, float(2 * SIZE), True)
