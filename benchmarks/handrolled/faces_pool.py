"""Seed 001 by hand: one function does all three steps, ``Pool(2).imap_unordered`` runs it."""

import json
import sys
from multiprocessing import Pool
from pathlib import Path

import cv2

_cascade = None


def work(path):
    global _cascade
    if _cascade is None:  # once per pool process
        _cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    image = cv2.imread(path)
    scale = min(1.0, 640 / image.shape[1])
    image = cv2.resize(image, None, fx=scale, fy=scale) if scale < 1 else image
    grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    faces = _cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
    for x, y, w, h in faces:
        cv2.rectangle(image, (x, y), (x + w, y + h), (0, 255, 0), 2)
    Path("boxed").mkdir(exist_ok=True)
    cv2.imwrite(str(Path("boxed") / Path(path).name), image)
    return path, [list(map(int, f)) for f in faces]


if __name__ == "__main__":
    paths = sorted(str(p) for p in Path(sys.argv[1]).iterdir())
    with Pool(2) as pool, open("faces.jsonl", "w") as out:
        for path, faces in pool.imap_unordered(work, paths):
            out.write(json.dumps({"key": path, "faces": faces}) + "\n")
