"""`graph_shape` and the tree ``parapipe plan`` prints; no worker process starts here."""

from __future__ import annotations

from typing import Any

import pytest

import parapipe as pp
import parapipe.cli
from parapipe.cli import main
from parapipe.graph import as_graph, graph_shape
from parapipe.plantree import format_tree


def decode(x: Any) -> Any:
    return x


def transcribe(x: Any) -> Any:
    return x


def embed(x: Any) -> Any:
    return x


def summarize(x: Any) -> Any:
    return x


GRAPH = pp.Pipeline(decode, pp.Parallel(asr=transcribe, speaker=pp.Pipeline(embed, embed)), summarize)

WORKERS = [
    {"stage": "decode", "replica": 0, "pid": 11, "cores": [0], "threads": 1, "gpus": []},
    {"stage": "transcribe", "replica": 1, "pid": 13, "cores": [2, 3], "threads": 2, "gpus": [0]},
    {"stage": "transcribe", "replica": 0, "pid": 12, "cores": [1], "threads": 1, "gpus": []},
    {"stage": "embed", "replica": 0, "pid": 14, "cores": [0, 1, 2, 3], "threads": 4, "gpus": []},
    {"stage": "summarize", "replica": 0, "pid": None, "cores": [5, 6, 7], "threads": 1, "gpus": []},
]


def test_graph_shape_keeps_the_nesting_the_branch_names_and_the_resolved_stage_names() -> None:
    assert graph_shape(as_graph(GRAPH)) == {
        "pipeline": [
            {"stage": "decode"},
            {"parallel": {"asr": {"stage": "transcribe"}, "speaker": {"pipeline": [{"stage": "embed"}] * 2}}},
            {"stage": "summarize"},
        ]
    }


def test_the_tree_nests_stages_and_lists_each_stage_s_workers_by_replica() -> None:
    assert format_tree(graph_shape(as_graph(GRAPH)), WORKERS) == "\n".join([
        "Pipeline",
        "├── decode  (1 replica)",
        "│   └── replica 0  pid 11  cores 0  1 thread",
        "├── Parallel",
        "│   ├── asr: transcribe  (2 replicas)",
        "│   │   ├── replica 0  pid 12  cores 1  1 thread",
        "│   │   └── replica 1  pid 13  cores 2-3  2 threads  gpus 0",
        "│   └── speaker: Pipeline",
        "│       ├── embed  (1 replica)",
        "│       │   └── replica 0  pid 14  cores 0-3  4 threads",
        "│       └── embed  (1 replica)",
        "│           └── replica 0  pid 14  cores 0-3  4 threads",
        "└── summarize  (1 replica)",
        "    └── replica 0  pid -  cores 5-7  1 thread",
    ])  # fmt: skip


def test_a_tree_before_the_workers_start_shows_the_shape_alone() -> None:
    assert format_tree({"parallel": {"a": {"stage": "a"}, "b": {"stage": "x"}}}, []) == "Parallel\n├── a\n└── b: x"


class _FakeEngine:
    """What ``parapipe plan`` reads from a started engine, without starting workers."""

    def __init__(self, graph: Any, **_: Any) -> None:
        self.graph = as_graph(graph)

    def __enter__(self) -> _FakeEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def workers(self) -> list[dict[str, Any]]:
        return WORKERS

    def plan(self) -> str:
        return "stage  replica  pid  cores  threads  gpus"


def test_parapipe_plan_prints_the_tree_then_the_table(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setattr(parapipe.cli.pp, "Engine", _FakeEngine)
    assert main(["plan", "tests.unit.test_plan_tree:GRAPH"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Pipeline\n├── decode  (1 replica)\n")
    assert "│   ├── asr: transcribe  (2 replicas)" in out
    assert out.rstrip().endswith("stage  replica  pid  cores  threads  gpus")
