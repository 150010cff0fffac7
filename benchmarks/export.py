"""The exported captioner: its size and speed as a SavedModel, and whether TFLite takes it.

    python benchmarks/export.py [--quick]

Exports the shipped run (utils.export_captioner, our default beam 5), then on the shared Flickr8k
photos: photos a second through the SavedModel's serving signature (JPEG bytes in, batches of
32), and its captions against utils.caption_image's. Then TFLite, with TensorFlow's select ops
allowed: the whole signature (bytes in), and the part a phone app would call (pixels already
decoded and resized, [n, size, size, 3]), each converted if the converter takes it and run by
tf.lite.Interpreter if the interpreter can; what fails is reported with its reason. Last line:
one JSON object.
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import utils

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
utils.hide_tensorflow_startup_lines()  # before an import below loads TensorFlow (utils/startup.py)
import numpy as np
import tensorflow as tf

from shared_data import REPO, shared_dir

SHIPPED_RUN = REPO / "models" / "flickr8k-pretrained"


def folder_size(folder):
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def tflite(converter, run):
    """What TFLite made of a graph: its size and `run(interpreter)`'s figures, or why not."""
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    try:
        model = converter.convert()
    except Exception as e:  # the converter raises its own types; any means "does not convert"
        lines = str(e).strip().splitlines()
        named = [line.strip() for line in lines if line.strip().startswith("Custom ops:")]
        return {"converts": False, "why": (named or lines[-1:])[0][:400]}
    found = {"converts": True, "megabytes": round(len(model) / 1e6, 2)}
    try:
        found |= run(tf.lite.Interpreter(model_content=model).get_signature_runner())
    except Exception as e:  # the interpreter's RuntimeError names what it cannot run
        found |= {"runs": False, "why": str(e).strip().splitlines()[0][:400]}
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 photos instead of all 875")
    args = parser.parse_args()
    photos = sorted((shared_dir() / "Images").glob("*.jpg"))[:64 if args.quick else None]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        folder = utils.export_captioner(SHIPPED_RUN, Path(tmp) / "captioner")
        export_seconds = time.perf_counter() - started
        serving = tf.saved_model.load(str(folder)).signatures["serving_default"]
        data = [p.read_bytes() for p in photos]
        serving(photos=tf.constant(data[:2]))  # the first call's tracing
        started = time.perf_counter()
        captions = [c.decode() for first in range(0, len(data), 32)
                    for c in serving(photos=tf.constant(data[first:first + 32]))["captions"].numpy()]
        saved_rate = len(data) / (time.perf_counter() - started)
        captioner = utils.Captioner.from_run(SHIPPED_RUN)
        checked = photos[:20]
        same = sum(utils.caption_image(captioner, p).text == c for p, c in zip(checked, captions))

        whole = tflite(tf.lite.TFLiteConverter.from_saved_model(str(folder)), lambda runner: {
            "runs": runner(photos=np.array(data[:1], dtype=object)) is not None})
        module = utils.ExportedCaptioner(captioner, utils.DEFAULT_DECODING)
        pixels_in = [tf.TensorSpec((None, size, size, 3), tf.float32) for size in module.sizes]

        @tf.function(input_signature=pixels_in, autograph=False)
        def from_pixels(*pixels):  # a batch of photos at each encoder's size, one per encoder
            features = tf.concat([encoder(spec.preprocess(batch), training=False)  # [n, dim] each
                                  for encoder, spec, batch in zip(module.encoders, module.specs,
                                                                  pixels)], axis=-1)
            return module.search(features, tf.zeros(2, tf.int64))[0]

        def timed(runner):
            inputs = {name: utils.load_image(photos[0], int(detail["shape"][1]))[None]
                      for name, detail in runner.get_input_details().items()}
            runner(**inputs)
            started = time.perf_counter()
            runner(**inputs)
            return {"runs": True, "seconds_a_photo": round(time.perf_counter() - started, 3)}

        pixels_graph = tflite(tf.lite.TFLiteConverter.from_concrete_functions(
            [from_pixels.get_concrete_function()], module), timed)
        print(json.dumps({
            "saved_model": {"megabytes": round(folder_size(folder) / 1e6, 1),
                            "export_seconds": round(export_seconds, 1),
                            "photos_per_second": round(saved_rate, 1),
                            "same_captions_as_caption_image": f"{same}/{len(checked)}"},
            "tflite_bytes_in": whole, "tflite_pixels_in": pixels_graph,
            "tensorflow": tf.__version__, "photos": len(photos), "quick": args.quick}))


if __name__ == "__main__":
    main()
