"""The file sinks and the ledger: what they write, what they say they hold after a kill, and
which sink an ``--out`` or ``--sink`` picks. No worker process starts here."""

from __future__ import annotations

import csv
import json

import pytest

import parapipe as pp
from parapipe.sinks import CsvSink, JsonlSink, Ledger, ParquetSink, open_sink

ERROR = pp.StageError("clean", "bad row")


class Recorder:
    """A user sink with neither ``written`` nor a path: it gets a ledger."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []
        self.closed = False

    def write(self, key: str, outcome: object) -> None:
        self.seen.append((key, outcome))

    def close(self) -> None:
        self.closed = True


def test_jsonl_cuts_a_torn_line_and_continues_the_file(tmp_path):
    out = tmp_path / "out.jsonl"
    sink = JsonlSink(out)
    sink.write("a", {"n": 1})
    sink.write("b", ERROR)
    sink.close()
    with open(out, "a") as f:
        f.write('{"key": "c", "res')  # a kill mid-write
    again = JsonlSink(out)
    assert again.written() == {"a", "b"}
    again.write("c", 3)
    again.close()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["key"] for line in lines] == ["a", "b", "c"]
    assert lines[1]["error"]["message"] == "bad row"


def test_retry_failed_drops_written_errors_so_they_are_written_again(tmp_path):
    for cls, name in [(JsonlSink, "o.jsonl"), (CsvSink, "o.csv"), (ParquetSink, "o.parquet")]:
        sink = cls(tmp_path / name)
        sink.write("ok", 1)
        sink.write("bad", ERROR)
        sink.close()
        assert cls(tmp_path / name).written() == {"ok", "bad"}
        retry = cls(tmp_path / name, retry_failed=True)
        assert retry.written() == {"ok"}, cls
        retry.close()


def test_csv_flattens_dict_results_and_grows_its_header(tmp_path):
    out = tmp_path / "out.csv"
    sink = CsvSink(out)
    sink.write("a", ERROR)  # an error first: no result field known yet
    sink.write("b", {"rows": 3, "tags": ["x"]})
    sink.write("c", {"rows": 4, "note": "multi\nline"})
    sink.close()
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["key", "rows", "tags", "note", "error"]
    assert rows[0]["error"] == "StageError: bad row"
    assert (rows[1]["rows"], rows[1]["tags"], rows[2]["note"]) == ("3", '["x"]', "multi\nline")


def test_csv_cuts_a_row_torn_inside_a_quoted_newline(tmp_path):
    out = tmp_path / "out.csv"
    sink = CsvSink(out)
    sink.write("a", {"text": "one"})
    sink.close()
    with open(out, "a") as f:
        f.write('b,"half\n')  # killed after the newline inside the quoted field
    again = CsvSink(out)
    assert again.written() == {"a"}
    again.write("b", {"text": "two"})
    again.close()
    with open(out, newline="") as f:
        assert [r["key"] for r in csv.DictReader(f)] == ["a", "b"]


def test_parquet_is_written_whole_on_close_and_at_each_checkpoint(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out.parquet"
    sink = ParquetSink(out, checkpoint=2)
    sink.write("a", {"n": 1})
    assert not out.exists()
    sink.write("b", {"n": 2})
    assert pq.read_table(out).column("key").to_pylist() == ["a", "b"]
    sink.write("c", ERROR)
    sink.close()
    assert pq.read_table(out).to_pylist()[2] == {"key": "c", "n": None, "error": "StageError: bad row"}


def test_the_extension_picks_the_sink_and_an_unknown_one_is_refused(tmp_path):
    assert isinstance(open_sink(tmp_path / "a.csv"), CsvSink)
    assert isinstance(open_sink(tmp_path / "a.jsonl"), JsonlSink)
    with pytest.raises(pp.ConfigError, match=r"\.xlsx.*--sink"):
        open_sink(tmp_path / "a.xlsx")


class PathRecorder(Recorder):
    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out


def test_a_sink_that_cannot_say_what_it_wrote_gets_a_ledger(tmp_path):
    sink = open_sink(tmp_path / "out.xlsx", f"{__name__}:PathRecorder")
    assert isinstance(sink, Ledger) and isinstance(sink.sink, PathRecorder)
    made = sink.sink
    assert made.out == str(tmp_path / "out.xlsx")
    sink.write("a", 1)
    sink.write("b", ERROR)
    sink.close()
    assert made.closed and made.seen == [("a", 1), ("b", ERROR)]
    assert open_sink(tmp_path / "out.xlsx", Recorder()).written() == {"a", "b"}
    assert open_sink(tmp_path / "out.xlsx", Recorder(), retry_failed=True).written() == {"a"}


def test_a_plain_function_is_a_sink(tmp_path):
    seen = []
    sink = open_sink(None, lambda key, outcome: seen.append(key), ledger=tmp_path / "keys")
    sink.write("k", 1)
    sink.close()
    assert seen == ["k"]


def test_a_sink_without_written_and_nowhere_for_a_ledger_is_refused():
    with pytest.raises(pp.ConfigError, match="--out or --journal"):
        open_sink(None, Recorder())


def test_a_bad_sink_spec_says_the_expected_form():
    with pytest.raises(pp.ConfigError, match="MODULE:NAME"):
        open_sink(None, "nocolon")
