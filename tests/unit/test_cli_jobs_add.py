"""``parapipe jobs add``: queue items, with their payloads, for ``parapipe run --follow``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from parapipe.cli import main
from parapipe.journal import State, open_journal


def test_jobs_add_queues_items_from_arguments_and_a_file_once(
    journal_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "more.jsonl"
    rows.write_text('{"id": "c", "path": "c.csv"}\n{"id": "a", "path": "other"}\n')

    assert main(["jobs", "add", journal_target, "a", "b"]) == 0
    assert main(["jobs", "add", journal_target, "--items", str(rows)]) == 0

    out = capsys.readouterr().out
    assert "queued 2 items, 0 already" in out and "queued 1 items, 1 already" in out
    with open_journal(journal_target) as journal:
        records: dict[str, Any] = {r.key: r for r in journal.records()}
    assert {k: (r.state, r.payload) for k, r in records.items()} == {
        "a": (State.QUEUED, "a"),
        "b": (State.QUEUED, "b"),
        "c": (State.QUEUED, {"id": "c", "path": "c.csv"}),
    }


@pytest.mark.parametrize(("argv", "message"), [
    (["jobs", "add"], "usage: parapipe jobs add JOURNAL"),
    (["jobs", "add", "x.db"], "nothing to add"),
    (["jobs", "x.db", "stray"], "to queue items: parapipe jobs add"),
])  # fmt: skip
def test_jobs_add_misuse_says_how_to_call_it(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()
