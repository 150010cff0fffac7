"""Training cost against dataset size: memory grows with the batch, not with the dataset.

    python benchmarks/scale.py [--quick] [--dir FOLDER]

Writes synthetic data to disk as notebooks 02 and 04 leave it (a float16 feature cache of 2,048
values an image, five encoded captions an image) at 10k, 100k and 1M images (`--quick`: up to
100k; 1M is 4.1 GB of features), then, for each size in a fresh process, does what notebook 04 does
with it: the feature statistics, then a fixed number of training steps of the default merge model
from the memory-mapped files. Each process reports its peak anonymous resident memory (`RssAnon`,
sampled every 10 ms: the mapped files' pages are the page cache's, not the process's) and its
captions per second over the timed steps. For contrast, the same steps with the tables held in
memory (`np.asarray`, as `caption_dataset` read them before) at the sizes up to 100k (a few
steps: memory only). Last, 100 steps on one device and under MirroredStrategy over two logical
CPU devices, from the same initial weights and batches, with both losses. Last line: one JSON
object with `sizes`, `peak_memory_ratio` and `throughput_ratio` (largest size over 10k),
`in_memory` and `mirrored`.
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FEATURE_DIM = 2048    # InceptionV3's pooled features
CAPTIONS = 5          # per image, as Flickr8k and COCO have
LENGTH = 22           # tokens per encoded caption, <start> and <end> included
VOCABULARY = 2500     # words (Flickr8k's vocabulary has 2,532)
WRITE_ROWS = 50_000   # images written at a time

# Run in a fresh process: (folder, steps, warm-up steps, "mapped" or "memory", strategy or
# "none") -> one JSON line with peak RssAnon, seconds and the last loss.
TRAIN = """
import json, sys, threading, time
folder, steps, warmup, how, strategy = sys.argv[1:]
steps, warmup = int(steps), int(warmup)
if strategy == "mirrored":  # before TensorFlow starts: two logical CPU devices
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
peak = [0]
def anonymous_kb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
def sample():
    while True:
        peak[0] = max(peak[0], anonymous_kb())
        time.sleep(0.01)
threading.Thread(target=sample, daemon=True).start()
import numpy as np
import utils
load = (lambda n: np.load(f"{folder}/{n}.npy", mmap_mode="r")) if how == "mapped" else (
    lambda n: np.asarray(np.load(f"{folder}/{n}.npy")))
features, rows, tokens = load("features"), load("rows"), load("tokens")
feature_statistics = utils.feature_statistics  # imports TensorFlow, before the clock starts
started = time.perf_counter()
stats = feature_statistics(features, rows)
statistics_seconds = time.perf_counter() - started
strategy = utils.distribution_strategy(None if strategy == "none" else strategy)
training = utils.TrainingConfig(batch_size=64, seed=0)
with strategy.scope():
    model = utils.build_model(utils.ModelConfig(%(vocabulary)d, features.shape[1]), training,
                              feature_stats=stats)
data = utils.caption_dataset(features, rows, tokens, training.batch_size, seed=0)
graph_bytes = len(data._as_serialized_graph().numpy()) if how == "mapped" else None
import keras
class Clock(keras.callbacks.Callback):  # the timed steps start after the warm-up's tracing
    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == warmup:
            self.started = time.perf_counter()
history = model.fit(data, steps_per_epoch=warmup + steps, epochs=1, verbose=0,
                    callbacks=[clock := Clock()])
seconds = time.perf_counter() - clock.started
print(json.dumps({"peak_rss_anon_mb": round(peak[0] / 1024, 1), "train_seconds": round(seconds, 2),
                  "captions_per_second": round(steps * training.batch_size / seconds, 1),
                  "statistics_seconds": round(statistics_seconds, 2), "graph_bytes": graph_bytes,
                  "loss": round(float(history.history["loss"][-1]), 5),
                  "devices": strategy.num_replicas_in_sync}))
""" % {"vocabulary": VOCABULARY}  # noqa: UP031 (the child's code has braces of its own)


def write_dataset(folder, images, seed=0):
    """A synthetic feature cache and encoded captions of `images` images, written in pieces."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "written").is_file():  # written last: an interrupted write is made anew
        return
    rng = np.random.default_rng(seed)
    features = np.lib.format.open_memmap(folder / "features.npy", "w+", "float16",
                                         (images, FEATURE_DIM))
    for start in range(0, images, WRITE_ROWS):
        block = rng.standard_normal((min(WRITE_ROWS, images - start), FEATURE_DIM), "float32")
        features[start:start + len(block)] = block
    features.flush()
    count = images * CAPTIONS
    np.save(folder / "rows.npy", np.repeat(np.arange(images, dtype="int32"), CAPTIONS))
    tokens = np.lib.format.open_memmap(folder / "tokens.npy", "w+", "int32", (count, LENGTH))
    for start in range(0, count, WRITE_ROWS * CAPTIONS):
        n = min(WRITE_ROWS * CAPTIONS, count - start)
        lengths = rng.integers(8, LENGTH + 1, n)
        block = rng.integers(4, VOCABULARY, (n, LENGTH), dtype="int32")
        block[np.arange(LENGTH) >= lengths[:, None]] = 0
        block[:, 0] = 2                              # <start>
        block[np.arange(n), lengths - 1] = 3         # <end>
        tokens[start:start + n] = block
    tokens.flush()
    (folder / "written").touch()


def train(folder, steps, warmup, how="mapped", strategy="none"):
    done = subprocess.run([sys.executable, "-c", TRAIN, str(folder), str(steps), str(warmup), how,
                           strategy], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO),
                               "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode:
        raise SystemExit(f"training on {folder} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k images, fewer steps")
    parser.add_argument("--dir", type=Path, help="where the synthetic data is written (kept); "
                        "default: a temporary folder, removed after")
    args = parser.parse_args()
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    steps, warmup = (150, 30) if args.quick else (300, 50)
    with (contextlib.nullcontext(args.dir) if args.dir else tempfile.TemporaryDirectory()) as tmp:
        root = Path(tmp)
        results = {}
        for images in sizes:
            folder = root / f"{images}"
            write_dataset(folder, images)
            results[images] = train(folder, steps, warmup)
            print(f"{images} images: {results[images]}", file=sys.stderr)
        # Memory only: a few steps are enough to reach the peak.
        in_memory = {images: train(root / f"{images}", 20, 20, "memory")
                     for images in sizes if images <= 100_000}
        mirrored = {strategy: train(root / f"{sizes[0]}", 100, 20, "mapped", strategy)
                    for strategy in ("none", "mirrored")}
    smallest, largest = results[sizes[0]], results[sizes[-1]]
    print(json.dumps({
        "sizes": {str(k): {"images": k, "captions": k * CAPTIONS, **v} for k, v in results.items()},
        "peak_memory_ratio": round(largest["peak_rss_anon_mb"] / smallest["peak_rss_anon_mb"], 3),
        "throughput_ratio": round(largest["captions_per_second"]
                                  / smallest["captions_per_second"], 3),
        "in_memory": {str(k): v for k, v in in_memory.items()},
        "mirrored": {"one_device": mirrored["none"], "mirrored_two_cpus": mirrored["mirrored"],
                     "loss_difference": round(abs(mirrored["none"]["loss"]
                                                  - mirrored["mirrored"]["loss"]), 5)},
        "steps": steps, "warmup_steps": warmup, "batch_captions": 64,
        "feature_dim": FEATURE_DIM, "feature_dtype": "float16", "vocabulary": VOCABULARY,
        "quick": args.quick}))


if __name__ == "__main__":
    main()
