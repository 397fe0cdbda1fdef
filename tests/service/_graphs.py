"""Graphs the service tests serve; module level so `parapipe serve tests.service._graphs:NAME` and
spawned workers can import them."""

from __future__ import annotations

import json
import os
from typing import Any

import parapipe as pp

GATE_ENV = "PARAPIPE_TEST_GATES"
"""A directory of FIFOs: the `gated` stage blocks on FIFO NAME for the item ``{"gate": NAME}``
until the test writes to it (one FIFO per item, so one release frees exactly one item)."""


PROBE_BATCH = 150
"""Requests the `probe` graph needs at once to answer at once: more than httpx's default pool (100)."""


def echo_item(item: Any) -> Any:
    return item


def describe(item: Any) -> dict[str, Any]:
    """Fails for "boom", so a test gets a StageError from a healthy worker."""
    if item == "boom":
        raise ValueError("boom is not a valid item")
    return {"item": item}


def size(described: dict[str, Any]) -> int:
    item = described["item"]
    return len(item) if isinstance(item, bytes) else len(json.dumps(item))


def kind(described: dict[str, Any]) -> str:
    return type(described["item"]).__name__


def merge(results: dict[str, Any]) -> dict[str, Any]:
    return {"size": results["size"], "kind": results["kind"]}


def gate(item: Any) -> Any:
    """Block on the item's FIFO until the test releases it (no sleeping, no polling)."""
    gates = os.environ.get(GATE_ENV)
    if isinstance(item, dict) and "gate" in item and gates:
        with open(os.path.join(gates, item["gate"]), "rb") as fifo:
            fifo.read(1)
    return {"released": item}


def deepen(item: Any) -> Any:
    """``{"depth": n}`` gives a result nested n lists deep (results the client did not send)."""
    if isinstance(item, dict) and isinstance(item.get("depth"), int):
        value: Any = 0
        for _ in range(item["depth"]):
            value = [value]
        return value
    return item


def unjsonable(item: Any) -> Any:
    return object() if item == "object" else item


class BrokenSetup(pp.Stage):
    """Its setup always raises, so the engine cannot start."""

    name = "broken"

    def setup(self) -> None:
        raise RuntimeError("the model file is missing")

    def process(self, item: Any) -> Any:
        return item


class GatedSetup(pp.Stage):
    """Its setup waits on the gate named "setup", so a test sees the server while models load."""

    name = "loading"

    def setup(self) -> None:
        gates = os.environ.get(GATE_ENV)
        if gates:
            with open(os.path.join(gates, "setup"), "rb") as fifo:
                fifo.read(1)

    def process(self, item: Any) -> Any:
        return item


class BatchProbe(pp.Stage):
    """Answers every item with the size of the batch it arrived in, so a test sees how many
    requests the server held at once: a full batch goes the moment its last item arrives, a
    partial one only after `batch_wait`."""

    name = "probe"
    batch_size = PROBE_BATCH
    batch_wait = 30.0

    def process(self, item: Any) -> int:
        return 1

    def process_batch(self, items: list[Any]) -> list[int]:
        return [len(items)] * len(items)


echo = pp.stage(echo_item, name="echo")
pipeline = pp.Pipeline(
    pp.stage(describe, name="describe"),
    pp.Parallel(size=pp.stage(size, name="size"), kind=pp.stage(kind, name="kind", nice=5), merge=merge),
)  # kind at a lower CPU priority, for the dashboard to show
gated = pp.stage(gate, name="gate")
deep = pp.stage(deepen, name="deepen")
unserializable = pp.stage(unjsonable, name="unjsonable")
probe = BatchProbe()
broken = BrokenSetup()
loading = GatedSetup()


def speech() -> Any:
    """The full speech graph; imported only by the audio tests, which skip without its extra."""
    from parapipe.audio import analysis_graph

    return analysis_graph(max_seconds=120)
