"""Decoding speed: the compiled search against the Python loop it replaced, and the seeds' loop.

    python benchmarks/decoding.py [--quick]

The shipped run (models/flickr8k-pretrained, a merge model on EfficientNet-Lite0 features) writes
captions for the 1,000 dev photos of Flickr8k's official split (their features from
../shared/flickr8k/features/), greedily and with our default beam 5, three ways:

    graph   utils.decode: the whole search one compiled TensorFlow graph (utils/search.py)
    loop    the search as it was before, one Python iteration a word with its beams, rules and
            bookkeeping in numpy (tests/decoding_oracle.py, the oracle of the tests)
    seeds   the seed projects' loop: for each image, for each word, `model.predict` on the
            pre-padded prefix (timed on a few photos: it is slow)

each for the one run and for an ensemble of three (three copies of the run loaded as three
models: an ensemble's cost, whatever its members). The graph's and the loop's captions are
compared token for token; XLA (jit_compile) is timed beside the plain graph for beam 5. Each
rate is the best of two passes after a warm-up (the tracing). Last line: one JSON object.
"""
import argparse
import json
import os
import sys
import time
from functools import partial

import utils

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
utils.hide_tensorflow_startup_lines()  # before an import below loads TensorFlow (utils/startup.py)
import numpy as np
import seed_recipe

from shared_data import REPO, SHARED, TRAINVAL, shared_dir

sys.path.insert(0, str(REPO / "tests"))
import decoding_oracle

SHIPPED_RUN = REPO / "models" / "flickr8k-pretrained"


def rate(function, n, passes=2):
    """(images a second of the fastest of `passes` calls, the last call's output)."""
    best = np.inf
    for _ in range(passes):
        start = time.perf_counter()
        out = function()
        best = min(best, time.perf_counter() - start)
    return n / best, out


def dev_features(n):
    """The first `n` dev photos' features, in the split file's order."""
    names, features = utils.load_features(shared_dir() / "features" / TRAINVAL.name)
    row = {name: i for i, name in enumerate(names)}
    dev = (SHARED / "Flickr_8k.devImages.txt").read_text().split()
    return np.asarray(features[[row[name] for name in dev[:n]]], "float32")


def speeds(decoder, images, settings, loop_images):
    """Per setting: the graph's and the loop's rates, and how many captions they share."""
    found = {}
    for label, setting in settings.items():
        utils.decode(decoder, images[:8], setting)  # the trace, as any first call
        graph_rate, graph = rate(partial(utils.decode, decoder, images, setting), len(images))
        loop_rate, loop = rate(partial(decoding_oracle.beam_search, decoder,
                                       images[:loop_images], setting), loop_images, passes=1)
        same = sum(a.ids == b.ids for a, b in zip(graph, loop))
        found[label] = {"graph": round(graph_rate, 1), "loop": round(loop_rate, 1),
                        "speedup": round(graph_rate / loop_rate, 2),
                        "same_captions": f"{same}/{len(loop)}",
                        "mean_words": round(float(np.mean([len(c.ids) for c in graph])), 2)}
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 photos, the seeds' loop on 3")
    args = parser.parse_args()
    n_images, n_seeds = (200, 3) if args.quick else (1000, 20)
    images = dev_features(n_images)
    model, vocab, _ = utils.load_run(SHIPPED_RUN)
    one = utils.CaptionDecoder(model, vocab)
    three = utils.Ensemble([one, *(utils.CaptionDecoder(utils.load_run(SHIPPED_RUN)[0], vocab)
                                   for _ in range(2))])
    settings = {"greedy": utils.DecodingSetting(1, 0.0, 0), "beam5": utils.DEFAULT_DECODING}
    one_run, ensemble = (speeds(d, images, settings, n_images) for d in (one, three))

    # XLA: the same search compiled with jit_compile, beam 5, one run.
    xla = utils.SearchKind(5, length_penalty=1.0, no_repeat_ngram=2, jit=True)
    search = utils.compiled_search(one, xla, images.shape[1:])
    search(images[:8], np.zeros(2, "int64"))  # the compilation
    per_batch = utils.ROWS_PER_STEP // 5
    xla_rate, xla_ids = rate(lambda: np.concatenate(
        [search(images[i:i + per_batch], np.zeros(2, "int64"))[0].numpy()
         for i in range(0, n_images, per_batch)]), n_images)
    graph_ids = utils.caption_ids(utils.decode(one, images), vocab.end_id)
    xla_same = sum(np.array_equal(a[:len(b)], b) for a, b in zip(xla_ids, graph_ids))

    prefix = utils.prefix_model(model, vocab.sequence_length - 1)
    seed_recipe.greedy(prefix, vocab, images[0])
    seed_rate, _ = rate(lambda: [seed_recipe.greedy(prefix, vocab, im) for im in images[:n_seeds]],
                        n_seeds, passes=1)
    print(json.dumps({
        "captions_per_second": {"one_run": one_run, "ensemble_of_three": ensemble},
        "beam5_graph_over_loop": one_run["beam5"]["speedup"],
        "ensemble_time_over_one_run": {
            label: round(one_run[label]["graph"] / ensemble[label]["graph"], 2)
            for label in settings},
        "beam5_xla": {"captions_per_second": round(xla_rate, 1),
                      "over_plain_graph": round(xla_rate / one_run["beam5"]["graph"], 2),
                      "same_captions": f"{xla_same}/{n_images}"},
        "seeds_greedy_captions_per_second": round(seed_rate, 2),
        "greedy_graph_over_seeds": round(one_run["greedy"]["graph"] / seed_rate, 1),
        "run": str(SHIPPED_RUN.relative_to(REPO)), "photos": f"first {n_images} dev photos",
        "seeds_photos": n_seeds, "quick": args.quick}))


if __name__ == "__main__":
    main()
