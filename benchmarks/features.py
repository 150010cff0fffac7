"""Feature-extraction speed: InceptionV3 on the shared Flickr8k photos.

    python benchmarks/features.py [--quick]

Prints one JSON object on its last line: `images_per_second` (end to end, default settings:
tf.data decoding + InceptionV3 at 299x299, batch 32, cached to disk), the batch-size sweep of the
network alone, and decoding alone, to show where the time goes. Random weights: this machine
cannot download ImageNet's, and the arithmetic is the same.
"""
import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import utils

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
utils.hide_tensorflow_startup_lines()  # before an import below loads TensorFlow (utils/startup.py)
import numpy as np
import tensorflow as tf

from shared_data import SHARED, shared_dir


def rate(n, seconds):
    return round(n / seconds, 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 images, two batch sizes")
    parser.add_argument("--images", type=Path, default=SHARED / "Images")
    args = parser.parse_args()
    if args.images == SHARED / "Images":
        shared_dir()
    names = sorted(p.name for p in args.images.glob("*.jpg"))[:64 if args.quick else 320]
    paths = [str(args.images / n) for n in names]
    encoder = utils.Encoder("inceptionv3", None)
    model = encoder.build()

    start = time.perf_counter()
    decoded = sum(len(batch) for batch, _ in utils.image_batches(paths, 299, 32, errors={}))
    decode_rate = rate(decoded, time.perf_counter() - start)

    sweep = {}
    for batch_size in (16, 32) if args.quick else (8, 16, 32, 64):
        pixels = np.random.default_rng(0).uniform(0, 255, (batch_size, 299, 299, 3))
        x = encoder.spec.preprocess(pixels)
        model.predict_on_batch(x)  # the first call traces the graph
        repeats = max(1, 64 // batch_size)
        start = time.perf_counter()
        for _ in range(repeats):
            model.predict_on_batch(x)
        sweep[batch_size] = rate(batch_size * repeats, time.perf_counter() - start)

    cache = Path(tempfile.mkdtemp())
    try:
        start = time.perf_counter()
        utils.extract_features(args.images, names, cache / "f", encoder, batch_size=32,
                               model=model)
        end_to_end = rate(len(names), time.perf_counter() - start)
    finally:
        shutil.rmtree(cache)

    print(json.dumps({
        "images_per_second": end_to_end, "images": len(names), "batch_size": 32,
        "network_only_images_per_second_by_batch": sweep,
        "decode_only_images_per_second": decode_rate,
        "devices": [d.device_type for d in tf.config.list_physical_devices()],
        "cpu_count": os.cpu_count(), "quick": args.quick}))


if __name__ == "__main__":
    main()
