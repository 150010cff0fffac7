"""Decoding speed: incremental, batched greedy and beam search against the seeds' per-image loop.

    python benchmarks/decoding.py [--quick]

A merge model is trained briefly (2 epochs) on the shared Flickr8k subset's real ImageNet features
(../shared/flickr8k/features/), so that its captions have realistic lengths. Then captions are
written for 1,000 feature vectors (the shared images' features, cycled), greedily and with beam
width 3, by `utils.decode`. The baseline is the seed projects' way:
for each image, for each word, `model.predict` on the pre-padded prefix, until <end>. It is timed
on a subset (it is slow) and its rate compared. Its greedy captions must equal ours. Last line:
one JSON object with `greedy_speedup` and `beam3_speedup`.
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import seed_recipe

import utils
from shared_data import SharedData


def rate(function, n):
    start = time.perf_counter()
    out = function()
    return n / (time.perf_counter() - start), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 images, baseline on 5")
    args = parser.parse_args()
    n_images, n_baseline = (200, 5) if args.quick else (1000, 30)

    vocab, data = SharedData().captions()
    # Two epochs of plain training (no label smoothing, random embedding): realistic captions.
    training = utils.TrainingConfig(label_smoothing=0.0)
    model = utils.build_model(utils.ModelConfig(len(vocab), data.features.shape[1],
                                                train_embedding=False),
                              training, feature_stats=data.feature_statistics())
    batches = utils.batch_count(data.train[1], training.batch_size)
    model.fit(data.datasets(training.batch_size, training.seed, epochs=(0, 2))[0], epochs=2,
              steps_per_epoch=batches, shuffle=False, verbose=0)
    images = data.features[np.arange(n_images) % len(data.features)]

    decoder = utils.CaptionDecoder(model, vocab)
    greedy_setting, beam_setting = utils.DecodingSetting(1, 0.0, 0), utils.DecodingSetting(3, 0.0, 0)
    for setting in (greedy_setting, beam_setting):  # trace the step once, as any warm-up
        utils.decode(decoder, images[:8], setting)
    greedy_rate, greedy = rate(lambda: utils.decode(decoder, images, greedy_setting), n_images)
    beam_rate, beam = rate(lambda: utils.decode(decoder, images, beam_setting), n_images)

    prefix = utils.prefix_model(model, vocab.sequence_length - 1)
    seed_recipe.greedy(prefix, vocab, images[0])
    seed_greedy_rate, seed_captions = rate(
        lambda: [seed_recipe.greedy(prefix, vocab, im) for im in images[:n_baseline]], n_baseline)
    seed_beam_rate, _ = rate(
        lambda: [seed_recipe.beam(prefix, vocab, im, 3) for im in images[:n_baseline]], n_baseline)
    same = sum(list(a) == list(b.ids) for a, b in zip(seed_captions, greedy[:n_baseline]))
    print(json.dumps({
        "greedy_speedup": round(greedy_rate / seed_greedy_rate, 1),
        "beam3_speedup": round(beam_rate / seed_beam_rate, 1),
        "images_per_second": {"greedy": round(greedy_rate, 1), "beam3": round(beam_rate, 1),
                              "seed_greedy": round(seed_greedy_rate, 2),
                              "seed_beam3": round(seed_beam_rate, 2)},
        "baseline_greedy_captions_equal_ours": f"{same}/{n_baseline}",
        "mean_caption_words": float(np.mean([len(c.ids) for c in greedy])),
        "captions": {"greedy": [c.text for c in greedy[:20]], "beam3": [c.text for c in beam[:20]]},
        "images": n_images, "baseline_images": n_baseline, "vocabulary": len(vocab),
        "quick": args.quick}))


if __name__ == "__main__":
    main()
