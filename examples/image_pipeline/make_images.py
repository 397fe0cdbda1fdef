"""Save scikit-image's sample photos (bundled with it: no download) as N JPEG files.

    python make_images.py images 200
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
from skimage import data

PHOTOS = ["astronaut", "coffee", "chelsea", "camera", "rocket", "immunohistochemistry"]


def main(folder: str, count: int) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    photos = [getattr(data, name)() for name in PHOTOS]
    for i in range(count):
        rgb = photos[i % len(photos)]
        bgr = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(Path(folder) / f"{PHOTOS[i % len(PHOTOS)]}-{i:04d}.jpg"), bgr)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "images", int(sys.argv[2]) if len(sys.argv) > 2 else 200)
