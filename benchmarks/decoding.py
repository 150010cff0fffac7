"""Decoding speed: incremental, batched greedy and beam search against the seeds' per-image loop.

    python benchmarks/decoding.py [--quick]

A merge model is trained briefly (2 epochs) on the shared Flickr8k subset's real ImageNet features
(../shared/flickr8k/features/), so that its captions have realistic lengths. Then captions are
written for 1,000 feature vectors (the shared images' features, cycled), greedily and with beam
width 3, by `utils.greedy_search` / `utils.beam_search`. The baseline is the seed projects' way:
for each image, for each word, `model.predict` on the pre-padded prefix, until <end>. It is timed
on a subset (it is slow) and its rate compared. Its greedy captions must equal ours. Last line:
one JSON object with `greedy_speedup` and `beam3_speedup`.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras  # noqa: E402
import numpy as np  # noqa: E402

import utils  # noqa: E402
from training import load_shared  # noqa: E402


def seed_predict(prefix, image, ids):
    """The seeds' step: `model.predict` on the whole caption so far, pre-padded, for one image."""
    padded = np.zeros((1, prefix.input[1].shape[1]), "int32")
    padded[0, -len(ids):] = ids[-padded.shape[1]:]
    return prefix.predict([image[None], padded], verbose=0)[0]


def seed_greedy(prefix, vocab, image):
    """The seed projects' decoding: re-run the model on the whole padded prefix for every word."""
    ids = [vocab.start_id]
    for _ in range(vocab.max_length + 1):
        word = int(seed_predict(prefix, image, ids).argmax())
        if word == vocab.end_id:
            break
        ids.append(word)
    return ids[1:vocab.max_length + 1]


def seed_beam(prefix, vocab, image, width):
    """The seed projects' beam search: every beam of one image re-run from its full prefix."""
    beams = [([vocab.start_id], 0.0)]
    for _ in range(vocab.max_length + 1):
        candidates = []
        for ids, score in beams:
            if ids[-1] == vocab.end_id:
                candidates.append((ids, score))
                continue
            log_probs = np.log(seed_predict(prefix, image, ids) + 1e-12)
            candidates += [(ids + [int(w)], score + log_probs[w])
                           for w in np.argsort(-log_probs)[:width]]
        beams = sorted(candidates, key=lambda b: -b[1])[:width]
        if all(ids[-1] == vocab.end_id for ids, _ in beams):
            break
    return beams[0][0]


def rate(function, n):
    start = time.perf_counter()
    out = function()
    return n / (time.perf_counter() - start), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 images, baseline on 5")
    args = parser.parse_args()
    n_images, n_baseline = (200, 5) if args.quick else (1000, 30)

    prepared, vocab, names, features = load_shared()
    rows, tokens = utils.encode_captions(prepared, vocab, "train", names)
    keras.utils.set_random_seed(0)
    model = utils.compile_model(utils.build_caption_model(
        len(vocab), features.shape[1], feature_stats=utils.feature_statistics(features[rows])))
    model.fit(utils.caption_dataset(features, rows, tokens), epochs=2, verbose=0)
    images = features[np.arange(n_images) % len(features)]

    decoder = utils.CaptionDecoder(model, vocab)
    utils.greedy_search(decoder, images[:8])  # trace the step once, as any warm-up
    utils.beam_search(decoder, images[:8], 3)
    greedy_rate, greedy = rate(lambda: utils.greedy_search(decoder, images), n_images)
    beam_rate, _ = rate(lambda: utils.beam_search(decoder, images, 3), n_images)

    prefix = utils.prefix_model(model, vocab.sequence_length - 1)
    seed_greedy(prefix, vocab, images[0])
    seed_greedy_rate, seed_captions = rate(
        lambda: [seed_greedy(prefix, vocab, im) for im in images[:n_baseline]], n_baseline)
    seed_beam_rate, _ = rate(
        lambda: [seed_beam(prefix, vocab, im, 3) for im in images[:n_baseline]], n_baseline)
    same = sum(a == b for a, b in zip(seed_captions, greedy[:n_baseline]))
    print(json.dumps({
        "greedy_speedup": round(greedy_rate / seed_greedy_rate, 1),
        "beam3_speedup": round(beam_rate / seed_beam_rate, 1),
        "images_per_second": {"greedy": round(greedy_rate, 1), "beam3": round(beam_rate, 1),
                              "seed_greedy": round(seed_greedy_rate, 2),
                              "seed_beam3": round(seed_beam_rate, 2)},
        "baseline_greedy_captions_equal_ours": f"{same}/{n_baseline}",
        "mean_caption_words": float(np.mean([len(c) for c in greedy])),
        "images": n_images, "baseline_images": n_baseline, "vocabulary": len(vocab),
        "quick": args.quick}))


if __name__ == "__main__":
    main()
