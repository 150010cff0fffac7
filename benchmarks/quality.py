"""Caption quality on real photos: our default configuration against the seed projects' recipe.

    python benchmarks/quality.py [--quick] [--seeds N] [--tune]

Both train on the official train images of the shared Flickr8k subset (753 of them, 5 captions
each), from the real ImageNet features in ../shared/flickr8k/features/ (an external .npz, as a
user would bring), pick their best epoch by validation loss on the dev images (113), and are
scored on those dev images: corpus BLEU-1..4 (nltk) and CIDEr-D (pycocoevalcap) against all five
references. The official test images are not in the subset, so nothing here touches them.

- Ours: the defaults of the notebooks' `parameters` cells (read from the notebooks by papermill, so
  the benchmark measures exactly what a user runs): cleaning, vocabulary threshold, GloVe 50d,
  training by whole captions with sparse targets, checkpoint, early stopping, learning-rate
  schedule; decoded greedily and with beam search (widths 3 and 5), with and without length
  normalisation and the rule against repeated word pairs (notebook 05's NO_REPEAT_NGRAM).
- Baseline, the seed projects' recipe (seed_recipe.py: their cleaning, raw features, one-hot
  prefix training, same architecture, best epoch on dev loss), decoded greedily (also scored with
  our repeat rule, reported beside).

`--tune` also trains each variant of VARIANTS (one change to the default each). Every score is
written to benchmarks/results/quality.json (`--out`), except with `--quick`. Last line: one JSON
object with, per configuration, the mean and standard deviation over seeds, and
`bleu4_gain_over_baseline` / `cider_gain_over_baseline`: the means of our default, decoded as
notebook 05 and the app decode by default (utils.DEFAULT_DECODING), minus the baseline's greedy ones;
`gains_by_decoding` gives them for every decoding, `gains_over_baseline_with_repeat_rule` against
the baseline's greedy captions under our repeat rule.
"""
import argparse
import ast
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import papermill  # noqa: E402

import seed_recipe  # noqa: E402
from shared_data import FEATURES, REPO, SharedData  # noqa: E402
import utils  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "quality.json"
# Each variant changes one setting of the current default. Earlier rounds, each against the
# defaults of its day, are in benchmarks/results/quality-tuning*.json and docs/results.md's tuning table.
VARIANTS = {
    "GloVe frozen": {"train_embedding": False},
    "no label smoothing": {"label_smoothing": 0.0},
    "vocabulary threshold 10": {"min_count": 10},
    "vocabulary threshold 3": {"min_count": 3},
    "dropout 0.3": {"dropout": 0.3},
    "dropout 0.6": {"dropout": 0.6},
    "learning rate 2e-3": {"learning_rate": 2e-3},
    "learning rate 5e-4": {"learning_rate": 5e-4},
    "constant learning rate": {"lr_plateau_factor": None},
    "LSTM 512": {"units": 512},
    "LSTM 128": {"units": 128},
    "random 200d embedding, trained": {"glove": False, "embedding_dim": 200},
    "batch 32": {"batch_size": 32},
}
DECODINGS = [utils.DecodingSetting(*d) for d in (
    (1, 0.0, 0), (3, 0.0, 0), (5, 0.0, 0), (3, 1.0, 0), (5, 1.0, 0),
    (1, 0.0, 2), (3, 1.0, 2), (5, 1.0, 2))]
# The seeds decode greedily, with nothing ruled out but what every decoding here rules out
# (stage 5: <unk>, <pad>, <start>); also scored with our repeat rule, to show what it adds.
BASELINE_DECODINGS = [utils.DecodingSetting(1, 0.0, 0), utils.DecodingSetting(1, 0.0, 2)]
MODEL_FIELDS = set(utils.ModelConfig.__dataclass_fields__) - {"vocab_size", "feature_dim"}
TRAINING_FIELDS = set(utils.TrainingConfig.__dataclass_fields__) - {"seed"}


def notebook_defaults():
    """Our default settings: the `parameters` cells of notebooks 01, 03 and 04 as papermill reads
    them (so the benchmark measures what a user runs), named as the records name them."""
    values = {}
    for stem in ("01_prepare_captions", "03_glove_embeddings", "04_train_model"):
        for name, p in papermill.inspect_notebook(str(REPO / "notebooks" / f"{stem}.ipynb")).items():
            values[name] = ast.literal_eval(p["default"])
    settings = {"drop_one_letter": values["DROP_ONE_LETTER"], "min_count": values["MIN_COUNT"],
                "glove": True, "embedding_dim": values["DIM"]}
    return settings | {field: values[field.upper()] for field in MODEL_FIELDS | TRAINING_FIELDS
                       if field != "embedding_dim"}


def train_ours(shared, config, seed, run_dir):
    """The notebook 04 path: returns (best model, vocabulary, training seconds, epochs run)."""
    vocab, data = shared.captions(config["min_count"], config["drop_one_letter"])
    model_config = utils.ModelConfig(len(vocab), data.features.shape[1],
                                     **{f: config[f] for f in MODEL_FIELDS})
    training = utils.TrainingConfig(seed=seed, **{f: config[f] for f in TRAINING_FIELDS})
    embedding = shared.embedding(vocab, seed) if config["glove"] else None
    model = utils.build_model(model_config, training, embedding, data.feature_statistics())
    start = time.perf_counter()
    history = utils.train_caption_model(model, data, run_dir, training, verbose=0)
    seconds = time.perf_counter() - start
    return keras.models.load_model(Path(run_dir) / "model.keras"), vocab, seconds, len(history)


def score(model, vocab, shared, drop_one_letter, decodings):
    """Dev-split scores of each decoding (utils.evaluate, without METEOR): BLEU-1..4, CIDEr-D,
    the distinct-caption count and the first image's caption."""
    names, features, references = shared.split("val", drop_one_letter)
    training = [c.split() for c in utils.split_captions(shared.prepared(drop_one_letter), "train")]
    results = utils.evaluate(utils.CaptionDecoder(model, vocab), names, features, references,
                             decodings, training, meteor=False, verbose=False)
    return {entry["label"]: {k: round(v, 4) for k, v in entry["scores"].items() if v is not None}
            | {"distinct_captions": entry["diagnostics"]["distinct_captions"],
               "example": entry["captions"][names[0]]} for entry in results}


def summarise(runs):
    """Mean and standard deviation over seeds of every number, per decoding."""
    out = {"train_seconds": _spread([r["train_seconds"] for r in runs]),
           "epochs": [r["epochs"] for r in runs]}
    for label in runs[0]["scores"]:
        out[label] = {k: _spread([r["scores"][label][k] for r in runs])
                      for k in ("bleu1", "bleu2", "bleu3", "bleu4", "cider_d", "distinct_captions")}
    return out


def _spread(values):
    return {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, at most 3 epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tune", action="store_true", help="also train every variant")
    parser.add_argument("--only", nargs="*", help="variants to tune (default: all)")
    parser.add_argument("--variants-only", action="store_true",
                        help="a further tuning round: no baseline, no default, no gains")
    parser.add_argument("--out", default=str(RESULTS), help="where every score is written")
    args = parser.parse_args()
    seeds = range(1 if args.quick else args.seeds)
    data = SharedData()
    default, decoding = notebook_defaults(), utils.DEFAULT_DECODING.label
    configs = {} if args.variants_only else {"default": default}
    if args.tune:
        configs |= {name: default | change for name, change in VARIANTS.items()
                    if not args.only or name in args.only}
    if args.quick:
        configs = {k: c | {"epochs": 3} for k, c in configs.items()}
    results = {"baseline": []}
    for seed in [] if args.variants_only else seeds:
        model, vocab, seconds, epochs = seed_recipe.train(data, seed, 3 if args.quick else None)
        results["baseline"].append({"seed": seed, "train_seconds": seconds, "epochs": epochs,
                                    "scores": score(model, vocab, data, True, BASELINE_DECODINGS)})
        print("baseline", seed, results["baseline"][-1]["scores"], file=sys.stderr)
    for name, config in configs.items():
        results[name] = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as run_dir:
                model, vocab, seconds, epochs = train_ours(data, config, seed, run_dir)
            results[name].append({"seed": seed, "train_seconds": seconds, "epochs": epochs,
                                  "scores": score(model, vocab, data, config["drop_one_letter"],
                                                  DECODINGS)})
            print(name, seed, {k: (v["bleu4"], v["cider_d"]) for k, v in
                               results[name][-1]["scores"].items()}, file=sys.stderr)
        if not args.quick:  # kept as it grows: a long run can be cut short
            utils.write_json(args.out, make_report(results, configs, decoding, data, args) | {"runs": results})
    print(json.dumps(make_report(results, configs, decoding, data, args)))


def make_report(results, configs, decoding, data, args):
    """Means and spreads per configuration; the gains of our default (with its default decoding,
    and with every other) over the baseline's greedy captions, and over those under our repeat
    rule."""
    summary = {name: summarise(runs) for name, runs in results.items() if runs}

    def gains(baseline_decoding):
        return {label: {metric: round(summary["default"][label][metric]["mean"]
                                      - summary["baseline"][baseline_decoding][metric]["mean"], 4)
                        for metric in ("bleu4", "cider_d")} for label in [d.label for d in DECODINGS]}

    by_decoding = with_rule = None
    if {"default", "baseline"} <= set(summary):
        by_decoding = gains("greedy")
        with_rule = gains(BASELINE_DECODINGS[1].label)[decoding]
    return {
        "bleu4_gain_over_baseline": by_decoding and by_decoding[decoding]["bleu4"],
        "cider_gain_over_baseline": by_decoding and by_decoding[decoding]["cider_d"],
        "default_decoding": decoding,
        "gains_by_decoding": by_decoding,
        "gains_over_baseline_with_repeat_rule": with_rule,
        "summary": summary,
        "settings": {"baseline": seed_recipe.CLEANING | seed_recipe.MODEL | seed_recipe.TRAINING,
                     "configurations": configs},
        "data": {"features": f"{FEATURES.name} ({data.features.shape[1]}-d)",
                 "train_images": len(data.prepared(False).names("train")),
                 "dev_images": len(data.prepared(False).names("val"))},
        "seeds": max(len(runs) for runs in results.values()), "quick": args.quick}


if __name__ == "__main__":
    main()
