"""Captioning latency of one uploaded photo, as the app does it, on this machine's CPU.

    python benchmarks/app_latency.py [--quick] [--run models/sample-inceptionv3] [--images DIR]

Loads a trained run the way `app.py` does (model, vocabulary, the run's own encoder), captions one
photo to trace the graphs, then times `utils.caption_image` (read, resize, encode, decode) on each
further photo, one at a time, greedy and as the app does by default (utils.DEFAULT_DECODING:
beam 5, length penalty 1), both without repeated word pairs, as in the app. `make run` leaves the
default run and the sample images. Last line: one JSON object with the median and the slowest milliseconds.
"""
import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
import numpy as np  # after TF_CPP_MIN_LOG_LEVEL, which TensorFlow reads once

import utils
from utils import Captioner  # loads TensorFlow now, before the clock starts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 photos instead of 50")
    parser.add_argument("--run", default=str(REPO / "models" / "sample-inceptionv3"))
    parser.add_argument("--images", default=str(REPO / "data" / "sample" / "Images"))
    args = parser.parse_args()
    if not utils.is_trained(args.run):
        sys.exit(f"{args.run}: no trained run; `make run` makes this one")
    photos = sorted(Path(args.images).iterdir())[:11 if args.quick else 51]

    start = time.perf_counter()
    captioner = Captioner.from_run(args.run)
    utils.caption_image(captioner, photos[0])
    load_seconds = time.perf_counter() - start

    milliseconds = {}
    for setting in (dataclasses.replace(utils.DEFAULT_DECODING, beam_width=1),
                    utils.DEFAULT_DECODING):
        times = []
        for photo in photos[1:]:
            start = time.perf_counter()
            utils.caption_image(captioner, photo, setting)
            times.append(1000 * (time.perf_counter() - start))
        milliseconds[setting.slug] = {"median": round(float(np.median(times)), 1),
                                       "max": round(float(np.max(times)), 1)}
    source = captioner.config.features
    print(json.dumps({"milliseconds_per_photo": milliseconds,
                      "load_and_first_caption_seconds": round(load_seconds, 2),
                      "photos": len(photos) - 1, "run": Path(args.run).name,
                      "encoder": f"{source.encoder} at {source.input_size}px",
                      "quick": args.quick}))


if __name__ == "__main__":
    main()
