"""Peak memory of decoding large images for feature extraction, as notebook 02 reads them.

    .venv/bin/python benchmarks/decode_memory.py [--quick]

Writes four images just under the 60-megapixel limit (7,700 x 7,700, a smooth picture) as PNG
and as JPEG, then reads each set through `utils.image_batches` (tf.data, one decode per core, in
one batch of four) in a fresh process, and reports that process's peak resident memory (sampled
every 2 ms) above its level before reading. PNG is read twice: as shipped (large images decoded
one at a time) and with that limit lifted (`LARGE_IMAGE_PIXELS` raised: one decode per core).
JPEGs are decoded at reduced scale. `--quick` uses two images. Last line: one JSON object.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SIDE = 7_700  # 59.3 megapixels

CHILD = """
import os, sys, json, threading, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import utils
if {unlimited}:
    utils.images.LARGE_IMAGE_PIXELS = 10 ** 12

def rss_mb():  # resident memory now (the peak of the whole process would be TensorFlow's start)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

list(utils.image_batches([], 299, 4, {{}}))  # start tf.data before measuring
before, highest, done = rss_mb(), [0.0], threading.Event()

def sample():
    while not done.is_set():
        highest[0] = max(highest[0], rss_mb())
        time.sleep(0.002)

sampler = threading.Thread(target=sample)
sampler.start()
started, errors = time.time(), {{}}
for images, ok in utils.image_batches({paths!r}, 299, 4, errors):
    assert ok.all(), errors
done.set()
sampler.join()
print(json.dumps({{"peak_above_start_mb": round(highest[0] - before), "seconds":
                  round(time.time() - started, 1), "cores": os.cpu_count()}}))
"""


def write_images(folder, n):
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype("float32") / SIDE
    picture = np.stack([255 * x, 255 * y, 255 * (1 - x) * y], -1).astype("uint8")
    paths = {"png": [], "jpeg": []}
    for i in range(n):
        image = Image.fromarray(np.roll(picture, 97 * i, axis=1))
        for fmt, suffix in (("png", "png"), ("jpeg", "jpg")):
            path = Path(folder) / f"large_{i}.{suffix}"
            image.save(path, compress_level=1) if fmt == "png" else image.save(path, quality=90)
            paths[fmt].append(str(path))
    return paths


def peak(paths, unlimited=False):
    code = CHILD.format(unlimited=unlimited, paths=paths)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two images instead of four")
    args = parser.parse_args()
    Image.MAX_IMAGE_PIXELS = None  # these are made here, on purpose this large
    with tempfile.TemporaryDirectory() as folder:
        paths = write_images(folder, 2 if args.quick else 4)
        results = {"images": len(paths["png"]), "megapixels": round(SIDE * SIDE / 1e6, 1),
                   "png_one_large_at_a_time": peak(paths["png"]),
                   "png_all_at_once": peak(paths["png"], unlimited=True),
                   "jpeg": peak(paths["jpeg"])}
    for name, value in results.items():
        print(f"{name:>28}: {value}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
