"""Which epoch each early-stopping rule picks, replayed on the dev curves the benchmarks stored.

    python benchmarks/stopping.py [--quick] [--results FILE ...] [--gains G ...]

quality.py and architectures.py record each run's dev curve: per epoch, its seconds, validation
loss, and greedy BLEU-4 and CIDEr-D on the dev images. Here each run's logged validation losses
are replayed through Keras's own EarlyStopping with each minimum gain (`MIN_GAIN`, `--gains`) and
the default patience: the epoch it stops after, the epoch the checkpoint keeps (the lowest
validation loss up to there), the training seconds up to the stop, and the kept epoch's greedy
dev CIDEr-D, beside the epoch that dev CIDEr-D itself would pick (the best of the whole curve).
The replay is exact: the minimum gain changes nothing before the stop (the learning-rate schedule
counts its own progress), so a run trained with gain 0 says what every larger gain would have done.
`--quick` replays the first stored run only. Last line: one JSON object, `runs` holding one entry
per run (configuration and seed) and `rules` the mean over runs per gain.
"""
import argparse
import json
import types

import keras
from our_recipe import notebook_defaults

from shared_data import REPO

RESULTS = [REPO / "benchmarks" / "results" / name
           for name in ("quality-full.json", "architectures-full.json")]
GAINS = (0.0, 0.001, 0.002, 0.005, 0.01)  # minimum gains replayed (validation loss, per epoch)


def replay(curve, patience, min_gain):
    """(epochs run, epoch kept) under Keras's EarlyStopping with this patience and gain, from
    the logged validation losses of `curve` (epochs numbered from 1)."""
    stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                             min_delta=min_gain)
    stopping.set_model(types.SimpleNamespace(stop_training=False))
    stopping.on_train_begin()
    run = curve
    for i, entry in enumerate(curve):
        stopping.on_epoch_end(i, {"val_loss": entry["val_loss"]})
        if stopping.model.stop_training:
            run = curve[:i + 1]
            break
    kept = min(run, key=lambda e: e["val_loss"])
    return len(run), kept["epoch"]


def rules(curve, patience, gains):
    """What each gain does to one run: epochs, seconds, the kept epoch and its greedy CIDEr-D."""
    by_score = max(curve, key=lambda e: e["greedy_cider_d"])
    out = {"by_dev_cider_d": {"epoch": by_score["epoch"], "greedy_cider_d": by_score["greedy_cider_d"]},
           "trained_until_stop": len(curve)}
    for gain in gains:
        epochs, kept = replay(curve, patience, gain)
        out[f"gain {gain:g}"] = {"epochs": epochs, "kept_epoch": kept,
                                 "seconds": round(sum(e["seconds"] for e in curve[:epochs])),
                                 "greedy_cider_d": curve[kept - 1]["greedy_cider_d"]}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first stored run only")
    parser.add_argument("--results", nargs="+", default=[str(p) for p in RESULTS if p.is_file()])
    parser.add_argument("--gains", nargs="+", type=float, default=GAINS)
    args = parser.parse_args()
    patience = notebook_defaults()["patience"]
    runs = {}
    for path in args.results:
        for name, seeds in json.loads(open(path).read())["runs"].items():
            for run in seeds:
                if "curve" in run:  # runs stored before the benchmarks kept curves have none
                    runs[f"{name}, seed {run['seed']}"] = rules(run["curve"], patience, args.gains)
    if args.quick:
        runs = dict(list(runs.items())[:1])
    if not runs:
        parser.error(f"no run with a dev curve in {', '.join(args.results)}")
    mean = {f"gain {g:g}": {k: round(sum(r[f"gain {g:g}"][k] for r in runs.values()) / len(runs), 4)
                            for k in ("epochs", "seconds", "greedy_cider_d")} for g in args.gains}
    mean["by_dev_cider_d"] = {"greedy_cider_d": round(sum(
        r["by_dev_cider_d"]["greedy_cider_d"] for r in runs.values()) / len(runs), 4)}
    print(json.dumps({"patience": patience, "runs": runs, "rules": mean}))


if __name__ == "__main__":
    main()
