"""Which batch size and precision pay off for the CNN of notebook 02, on this machine.

    .venv/bin/python benchmarks/extraction_settings.py [--quick]

Times InceptionV3 (random weights: the same arithmetic as ImageNet's) at 299x299 on random
images, the CNN alone (no JPEG decoding), for each batch size in float32 and in Keras's
mixed_float16 policy: images a second, the median of several timed batches after a warm-up one.
Runs under any Keras backend (KERAS_BACKEND), so it also runs where TensorFlow is not installed,
such as a GPU machine with only JAX or PyTorch: say which backend gave a figure when quoting it.
Last line: one JSON object.
"""
import argparse
import json
import os
import statistics
import time

import utils

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
utils.hide_tensorflow_startup_lines()  # before an import below loads TensorFlow (utils/startup.py)
import keras
import numpy as np


def images_per_second(batch_size, policy, repeats):
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    model = keras.applications.InceptionV3(include_top=False, weights=None, pooling="avg",
                                           input_shape=(299, 299, 3))
    batch = np.random.default_rng(0).uniform(-1, 1, (batch_size, 299, 299, 3)).astype("float32")
    np.asarray(model.predict_on_batch(batch))  # the first call compiles
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        np.asarray(model.predict_on_batch(batch))  # to host memory, as extraction does
        times.append(time.perf_counter() - started)
    return batch_size / statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 32 only, 2 timed batches")
    parser.add_argument("--batches", default="32,128,256")
    args = parser.parse_args()
    batches = [32] if args.quick else [int(b) for b in args.batches.split(",")]
    results = {f"{policy} batch {b}": round(images_per_second(b, policy, 2 if args.quick else 5), 1)
               for policy in ("float32", "mixed_float16") for b in batches}
    for name, rate in results.items():
        print(f"{name:>26}: {rate:8.1f} images/s")
    devices = [str(d) for d in keras.distribution.list_devices()] if hasattr(
        keras, "distribution") else []
    print(json.dumps({"backend": keras.backend.backend(), "keras": keras.__version__,
                      "devices": devices, "images_per_second": results}))


if __name__ == "__main__":
    main()
