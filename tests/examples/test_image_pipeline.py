"""examples/image_pipeline: the README's commands on a few sample photos find the astronaut's face."""

from __future__ import annotations

import csv
import json

import pytest

from .conftest import EXAMPLES, parapipe, python

pytest.importorskip("cv2", reason="the examples extra is not installed: pip install -e '.[examples]'")
pytest.importorskip("skimage", reason="the examples extra is not installed: pip install -e '.[examples]'")


def test_faces_are_found_boxed_and_saved(tmp_path):
    python("image_pipeline", tmp_path, str(EXAMPLES / "image_pipeline" / "make_images.py"), "images", "6")
    done = parapipe("image_pipeline", tmp_path, "run", "faces:graph", "images", "--out", "faces.csv",
                    "--journal", "faces.db", "--start-method", "fork")  # fmt: skip
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "faces.csv", newline="") as f:
        rows = {row["key"]: row for row in csv.DictReader(f)}
    assert len(rows) == 6 and not any(row["error"] for row in rows.values())
    assert len(json.loads(rows["images/astronaut-0000.jpg"]["faces"])) == 1
    assert all((tmp_path / row["saved"]).stat().st_size > 0 for row in rows.values())
