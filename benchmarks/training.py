"""Training speed: one pass per caption (ours) against one sample per caption prefix (the seeds').

    python benchmarks/training.py [--quick]

Both train the same merge model, from the same initial weights, on the same batches of captions
of the shared Flickr8k subset, as our pipeline batches them (length buckets), with real ImageNet
features from ../shared/flickr8k/features/ (the official train and dev images among them). The
prefix formulation expands each batch of captions
into one pre-padded sample per prefix, as the seed projects do, and takes one step on all of them,
so both follow the same mathematics and should reach the same validation loss after the same
number of caption passes. Last line: one JSON object with `speedup` (captions per second, ours
over theirs, after the first epoch, which also traces the graphs), `speedup_including_first_epoch`,
seconds per epoch and validation loss per epoch for both.
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np

import utils
from shared_data import SharedData


def train(model, run_epoch, epochs, val):
    """Run each epoch's batches; returns seconds and validation loss per epoch."""
    times, losses = [], []
    for batches in epochs:
        start = time.perf_counter()
        run_epoch(batches)
        times.append(time.perf_counter() - start)
        losses.append(float(model.evaluate(val, verbose=0)))
    return times, losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch on 200 images")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    epochs = 1 if args.quick else args.epochs
    vocab, data = SharedData().captions()
    features, (rows, tokens) = data.features, data.train
    if args.quick:
        keep = np.isin(rows, np.unique(rows)[:200])
        rows, tokens = rows[keep], tokens[keep]
    val = utils.caption_dataset(features, *data.val, 256, shuffle=False)

    # The same model twice, from the same initial weights; no dropout, so that both sides do the
    # same arithmetic; plain cross-entropy.
    config = utils.ModelConfig(len(vocab), features.shape[1], dropout=0.0, train_embedding=False)
    training = utils.TrainingConfig(label_smoothing=0.0)
    stats = utils.feature_statistics(features, rows)
    ours = utils.build_model(config, training, feature_stats=stats)
    theirs_base = utils.build_model(config, training, feature_stats=stats)
    theirs_base.set_weights(ours.get_weights())
    prefix_length = vocab.sequence_length - 1
    theirs = utils.compile_model(utils.prefix_model(theirs_base, prefix_length), training)

    order_rng = np.random.default_rng(0)
    epoch_data = [utils.caption_dataset(features, rows[order], tokens[order], args.batch_size,
                                        shuffle=False)
                  for order in (order_rng.permutation(len(rows)) for _ in range(epochs))]
    # The seeds' side takes exactly the caption batches of our pipeline (length buckets included),
    # each expanded into one pre-padded sample per prefix; the expansion is done before timing.
    their_batches = [[(image.numpy(), *utils.expand_prefixes(
                        np.concatenate([inputs.numpy()[:, :1], targets.numpy()], 1), prefix_length))
                      for (image, inputs), targets in data] for data in epoch_data]

    def our_epoch(data):  # the training pipeline itself: tf.data and fit
        ours.fit(data, verbose=0)

    def their_epoch(batches):
        for image, prefixes, next_words, owners in batches:
            theirs.train_on_batch([image[owners], prefixes], next_words)

    our_times, our_losses = train(ours, our_epoch, epoch_data, val)
    their_times, their_losses = train(theirs_base, their_epoch, their_batches, val)
    # The first epoch of each includes tracing the training step for its batch shapes: steady-state
    # figures leave it out (the usual warm-up), and the all-epochs ratio is reported beside them.
    steady = slice(1, None) if epochs > 1 else slice(None)
    ours_rate = len(rows) * len(our_times[steady]) / sum(our_times[steady])
    theirs_rate = len(rows) * len(their_times[steady]) / sum(their_times[steady])
    print(json.dumps({
        "speedup": round(ours_rate / theirs_rate, 2),
        "speedup_including_first_epoch": round(sum(their_times) / sum(our_times), 2),
        "captions_per_second": {"sequence": round(ours_rate, 1), "prefix_expansion": round(theirs_rate, 1)},
        "seconds_per_epoch": {"sequence": [round(t, 2) for t in our_times],
                              "prefix_expansion": [round(t, 2) for t in their_times]},
        "val_loss_per_epoch": {"sequence": [round(v, 4) for v in our_losses],
                               "prefix_expansion": [round(v, 4) for v in their_losses]},
        "train_captions": int(len(rows)),
        "prefix_samples_per_epoch": int(sum(len(b[1]) for b in their_batches[0])),
        "features": "efficientnet_lite0_imagenet (1280-d)", "vocabulary": len(vocab),
        "batch_captions": args.batch_size, "epochs": epochs, "quick": args.quick}))


if __name__ == "__main__":
    main()
