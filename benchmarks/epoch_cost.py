"""What a training step costs each architecture, on the same batches, in one process.

    python benchmarks/epoch_cost.py [--quick] [--full] [--architectures NAME ...] [--batches N]

Each architecture is built with our defaults (the notebooks' `parameters` cells) and trained on
the same batches of the shared Flickr8k captions (the subset's pooled features, or with `--full`
the whole split's; attention reads the subset's grids and is left out with `--full`), after one
batch that traces the step. The architectures take turns, one round of `--batches` batches each
at a time, so that a noisy machine slows them alike (each batch seen once first: Keras traces
the step for each caption length); the figure is each one's median round. Last
line: one JSON object with seconds a batch, the ratio to merge's, the parameters, and an epoch's
estimated seconds (a batch's cost x the epoch's batches: an estimate, not a measured epoch).
"""
import argparse
import json
import os
import time

import utils

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
utils.hide_tensorflow_startup_lines()  # before an import below loads TensorFlow (utils/startup.py)
import numpy as np
import our_recipe as recipe

from shared_data import SharedData

ROUNDS = 5  # turns each architecture takes; the median round is reported


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5 batches")
    parser.add_argument("--full", action="store_true", help="the whole split's features")
    parser.add_argument("--architectures", nargs="+", choices=utils.ARCHITECTURES,
                        default=list(utils.ARCHITECTURES))
    parser.add_argument("--batches", type=int, default=20, help="batches a round")
    args = parser.parse_args()
    rounds, per_round = (2, 5) if args.quick else (ROUNDS, args.batches)
    default = recipe.notebook_defaults()
    names = [n for n in args.architectures
             if not (args.full and utils.architecture_class(n).reads_grid)]
    models, batches, epoch_batches = {}, {}, {}
    for name in names:
        shared = SharedData(grid=utils.architecture_class(name).reads_grid, full=args.full)
        vocab, data = shared.captions(default["min_count"], default["drop_one_letter"])
        model_config, training = recipe.run_configs(default | {"architecture": name}, vocab, data)
        models[name] = utils.build_model(model_config, training, None, data.feature_statistics())
        train, _ = data.datasets(training.batch_size)
        batches[name] = list(train.take(per_round))
        epoch_batches[name] = utils.batch_count(data.train[1], training.batch_size)
        for inputs, targets in batches[name]:  # traces the step for each batch's shape
            models[name].train_on_batch(inputs, targets)
    seconds = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            start = time.perf_counter()
            for inputs, targets in batches[name]:
                models[name].train_on_batch(inputs, targets)
            seconds[name].append((time.perf_counter() - start) / per_round)
    per_batch = {name: float(np.median(s)) for name, s in seconds.items()}
    base = per_batch.get("merge")
    print(json.dumps({"full": args.full, "rounds": rounds, "batches_a_round": per_round,
                      "architectures": {name: {
                          "seconds_a_batch": round(per_batch[name], 4),
                          "ratio_to_merge": round(per_batch[name] / base, 2) if base else None,
                          "parameters": models[name].count_params(),
                          "estimated_seconds_an_epoch": round(per_batch[name]
                                                              * epoch_batches[name])}
                          for name in names}}))


if __name__ == "__main__":
    main()
