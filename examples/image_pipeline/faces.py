"""Find faces and draw boxes around them: list -> preprocess -> model -> postprocess.

    parapipe run faces:graph images --out faces.jsonl --journal faces.db --progress
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import parapipe as pp

WIDTH = 640
OUT_DIR = os.environ.get("FACES_OUT", "boxed")


@pp.stage(replicas=2)
def preprocess(path: str) -> dict[str, Any]:
    """Decode, shrink to 640 px wide, equalise a grey copy for the detector."""
    image = cv2.imread(path)
    scale = min(1.0, WIDTH / image.shape[1])
    image = cv2.resize(image, None, fx=scale, fy=scale) if scale < 1 else image
    grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    return {"path": path, "image": image, "grey": grey}


class Detect(pp.Stage):
    """The model, loaded once per worker in ``setup`` (in the worker: spawn-safe, as CUDA needs)."""

    replicas = 1

    def setup(self) -> None:
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def process(self, item: dict[str, Any]) -> dict[str, Any]:
        faces = self.cascade.detectMultiScale(item["grey"], scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
        return {"path": item["path"], "image": item["image"], "faces": np.asarray(faces).reshape(-1, 4).tolist()}


@pp.stage(replicas=2)
def postprocess(item: dict[str, Any]) -> dict[str, Any]:
    """Draw the boxes and save the picture; the result is what ``--out`` records."""
    image = item["image"]
    for x, y, w, h in item["faces"]:
        cv2.rectangle(image, (x, y), (x + w, y + h), (0, 255, 0), 2)
    Path(OUT_DIR).mkdir(exist_ok=True)
    saved = str(Path(OUT_DIR) / Path(item["path"]).name)
    cv2.imwrite(saved, image)
    return {"faces": item["faces"], "saved": saved}


graph = pp.Pipeline(preprocess, Detect(), postprocess)
