"""examples/io_pipeline: the README's command fetches every document through one concurrent
worker, scores each, and writes them all."""

from __future__ import annotations

import json

from .conftest import EXAMPLES, python


def test_the_io_pipeline_fetches_scores_and_writes_every_document(tmp_path):
    done = python("io_pipeline", tmp_path, str(EXAMPLES / "io_pipeline" / "pipeline.py"), "--docs", "120")
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [r["url"].rsplit("/", 1)[-1] for r in rows] == [str(i) for i in range(120)]
    assert all(isinstance(r["score"], float) for r in rows)
    took = float(done.stdout.rsplit(" documents in ", 1)[1].split(" s ")[0])
    assert took < 120 * 0.1 / 4, f"120 fetches of 100 ms took {took} s: they did not overlap"
