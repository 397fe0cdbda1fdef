"""``parapipe run`` and ``parapipe demo`` end to end, in this process, with real workers."""

from __future__ import annotations

import json
import os

import pytest

import parapipe as pp
import parapipe._demo
from parapipe.cli import main
from parapipe.journal import Journal, State

from . import _stages as S


def parent_pid(_: str) -> int:
    return os.getppid()


def fail_while_exists(path: str) -> str:
    if os.path.exists(path):
        raise ValueError(f"{path} exists")
    return "ok"


parent_pid_graph = pp.Pipeline(parent_pid)
fail_while_exists_graph = pp.Pipeline(fail_while_exists)


def _lines(out) -> dict[str, dict]:
    return {line["key"]: line for line in map(json.loads, out.read_text().splitlines())}


def test_run_uses_the_start_method_and_namespace_it_is_given(tmp_path, capsys):
    items, out, db = tmp_path / "items.txt", tmp_path / "out.jsonl", tmp_path / "run.db"
    items.write_text("a\nb\nc\n")
    argv = ["run", f"{__name__}:parent_pid_graph", "--items", str(items), "--out", str(out), "--journal", str(db),
            "--namespace", "nightly", "--start-method", "forkserver", "--replicas", "2"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().err == ""
    # A spawned worker is this process's child; a forkserver one is the fork server's.
    assert {line["result"] for line in _lines(out).values()}.isdisjoint({os.getpid()})
    with Journal(db) as journal:
        assert journal.runs() == ["nightly"]
    with Journal(db, run="nightly") as journal:
        assert journal.counts()[State.DONE] == 3


def test_a_failed_item_keeps_its_error_until_run_retry_failed(tmp_path, capsys):
    bad, good = tmp_path / "bad", tmp_path / "good"
    bad.touch()
    items, out, db = tmp_path / "items.txt", tmp_path / "out.jsonl", tmp_path / "run.db"
    items.write_text(f"{bad}\n{good}\n")
    argv = ["run", f"{__name__}:fail_while_exists_graph", "--items", str(items), "--out", str(out),
            "--journal", str(db), "--namespace", "nightly", "--start-method", "forkserver"]  # fmt: skip

    assert main(argv) == 1
    assert "ValueError" in json.dumps(_lines(out)[str(bad)]["error"])
    bad.unlink()
    assert main(argv) == 0, "without --retry-failed the failure stands"
    assert "error" in _lines(out)[str(bad)]

    assert main([*argv, "--retry-failed"]) == 0
    assert {key: line.get("result") for key, line in _lines(out).items()} == {str(bad): "ok", str(good): "ok"}
    with Journal(db, run="nightly") as journal:
        assert journal.counts()[State.DONE] == 2
    assert capsys.readouterr().out.splitlines()[-1] == f"1 results, 0 errors, 1 already in {out}"


@pytest.mark.parametrize(
    ("flag", "note"), [("--count", ""), ("--items", "parapipe: --items is deprecated, use --count\n")]
)
def test_demo_runs_as_many_items_as_counted(monkeypatch, capsys, flag, note):
    monkeypatch.setattr(parapipe._demo, "graph", lambda: pp.Pipeline(S.square))
    assert main(["demo", flag, "5", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert " 5 items in " in out and "done=   5" in out
    assert err == note
