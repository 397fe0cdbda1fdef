"""The ``parapipe`` command's options and its reading commands; no worker process starts here."""

from __future__ import annotations

import pytest

import parapipe.runner
from parapipe.cli import main
from parapipe.journal import Journal
from parapipe.runner import RunOptions

GRAPH = "parapipe._demo:graph"  # importing it is cheap: numpy loads only in the workers


@pytest.fixture
def run_options(monkeypatch, tmp_path):
    """Runs ``parapipe run`` up to the `RunOptions` it builds, and returns them."""
    seen: list[RunOptions] = []

    def fake_run_job(opts: RunOptions) -> dict[str, int]:
        seen.append(opts)
        return {"results": 0, "errors": 0, "skipped": 0}

    monkeypatch.setattr(parapipe.runner, "run_job", fake_run_job)

    def parse(*flags: str) -> RunOptions:
        assert main(["run", GRAPH, str(tmp_path), "--out", str(tmp_path / "out.jsonl"), *flags]) == 0
        return seen.pop()

    return parse


@pytest.mark.parametrize("flags", [[], ["--retry-failed"], ["--state", "failed"], ["--list"]])
def test_jobs_on_a_missing_journal_fails_naming_it_and_creates_nothing(tmp_path, capsys, flags):
    typo = tmp_path / "typo.db"
    assert main(["jobs", str(typo), *flags]) == 2
    err = capsys.readouterr().err
    assert str(typo) in err and "does not exist" in err and "--journal" in err
    assert list(tmp_path.iterdir()) == []


def test_jobs_reads_the_namespace_it_is_given_and_refuses_an_unknown_one(tmp_path, capsys):
    db = tmp_path / "run.db"
    with Journal(db, run="nightly") as journal:
        journal.add(["a", "b"])
    assert main(["jobs", str(db), "--namespace", "nightly"]) == 0
    assert "run 'nightly': 2 items, 2 queued" in capsys.readouterr().out

    assert main(["jobs", str(db), "--namespace", "nigthly"]) == 2
    err = capsys.readouterr().err
    assert "'nigthly'" in err and "['nightly']" in err
    with Journal(db) as journal:
        assert journal.runs() == ["nightly"]


def test_jobs_run_flag_still_works_with_a_deprecation_note(tmp_path, capsys):
    db = tmp_path / "run.db"
    with Journal(db, run="nightly") as journal:
        journal.add(["a"])
    assert main(["jobs", str(db), "--run", "nightly"]) == 0
    out, err = capsys.readouterr()
    assert "run 'nightly': 1 item, 1 queued" in out
    assert err == "parapipe: --run is deprecated, use --namespace\n"


def test_run_flags_reach_the_run_options(run_options):
    opts = run_options(
        "--replicas", "3", "--start-method", "forkserver", "--namespace", "nightly", "--retry-failed"
    )  # fmt: skip
    assert (opts.replicas, opts.start_method, opts.namespace, opts.retry_failed) == (3, "forkserver", "nightly", True)


def test_run_defaults(run_options):
    opts = run_options()
    assert (opts.replicas, opts.start_method, opts.namespace, opts.retry_failed) == (None, "spawn", "default", False)


def test_run_workers_flag_still_sets_replicas_with_a_deprecation_note(run_options, capsys):
    assert run_options("--workers", "3").replicas == 3
    assert capsys.readouterr().err == "parapipe: --workers is deprecated, use --replicas\n"


@pytest.mark.parametrize(
    ("command", "shown", "hidden"),
    [
        ("run", ["--replicas", "--namespace", "--start-method", "--retry-failed"], ["--workers"]),
        ("jobs", ["--namespace", "--retry-failed"], ["--run"]),
        ("demo", ["--count"], ["--items"]),
    ],
)
def test_help_shows_the_new_names_and_hides_the_old(capsys, command, shown, hidden):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    flags = set(capsys.readouterr().out.replace("[", " ").replace("]", " ").split())
    assert set(shown) <= flags and not set(hidden) & flags


def test_audio_voices_on_a_missing_registry_fails_naming_it_and_creates_nothing(tmp_path, capsys):
    pytest.importorskip("faster_whisper", reason="the audio extra is not installed")
    typo = tmp_path / "typo.db"
    assert main(["audio", "voices", "--voices", str(typo)]) == 2
    err = capsys.readouterr().err
    assert str(typo) in err and "does not exist" in err and "enroll" in err
    assert list(tmp_path.iterdir()) == []
