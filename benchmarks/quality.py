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
- Baseline, the seed projects' recipe (the InceptionV3 + GloVe tutorials): one-letter words dropped
  from the training captions, words seen fewer than 10 times dropped, raw (unstandardised)
  features, one training sample per caption prefix with one-hot targets and categorical
  cross-entropy, Adam 1e-3, greedy decoding (also scored with our repeat rule, reported beside).
  Same architecture, GloVe 50d (the only GloVe here; the tutorials use 200d), and, more generous
  than the tutorials, its best epoch chosen on dev loss.

`--tune` also trains each variant of VARIANTS (one change to the default each). Every score is
written to benchmarks/results/quality.json (`--out`), except with `--quick`. Last line: one JSON
object with, per configuration, the mean and standard deviation over seeds, and
`bleu4_gain_over_baseline` / `cider_gain_over_baseline`: the means of our default, decoded as
notebook 05 decodes by default (its first beam width), minus the baseline's greedy ones;
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
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import keras  # noqa: E402
import numpy as np  # noqa: E402
import papermill  # noqa: E402

import utils  # noqa: E402

SHARED = REPO.parent / "shared" / "flickr8k"
FEATURES = SHARED / "features" / "efficientnet_lite0_imagenet.npz"
RESULTS = REPO / "benchmarks" / "results" / "quality.json"
# The settings the tutorials use; see the module docstring.
BASELINE = {"drop_one_letter": True, "min_count": 10, "learning_rate": 1e-3, "dropout": 0.5,
            "units": 256, "batch_size": 256, "epochs": 15, "patience": 2}
# Each variant changes one setting of the current default. Earlier rounds, each against the
# defaults of its day, are in benchmarks/results/quality-tuning*.json and the README's tuning table.
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


def decoding_label(width, length_penalty, no_repeat_ngram):
    label = "greedy" if width == 1 else f"beam {width}"
    if width > 1 and length_penalty:
        label += f", length penalty {length_penalty:g}"
    return label + (f", no repeated {no_repeat_ngram}-gram" if no_repeat_ngram else "")


# (beam width, length penalty, no_repeat_ngram); width 1 is greedy search.
DECODINGS = {decoding_label(*d): d for d in (
    (1, 0.0, 0), (3, 0.0, 0), (5, 0.0, 0), (3, 1.0, 0), (5, 1.0, 0),
    (1, 0.0, 2), (3, 1.0, 2), (5, 1.0, 2))}
# The seeds decode greedily, with nothing ruled out but what every decoding here rules out
# (stage 5: <unk>, <pad>, <start>); also scored with our repeat rule, to show what it adds.
BASELINE_DECODINGS = {decoding_label(*d): d for d in ((1, 0.0, 0), (1, 0.0, 2))}


def notebook_defaults():
    """Our default training settings and decoding: the `parameters` cells of notebooks 01, 03, 04
    and 05 (its first beam width, which also captions a user's own photos), as papermill reads them."""
    values = {}
    for stem in ("01_prepare_captions", "03_glove_embeddings", "04_train_model",
                 "05_decode_and_evaluate"):
        for name, p in papermill.inspect_notebook(str(REPO / "notebooks" / f"{stem}.ipynb")).items():
            values[name] = ast.literal_eval(p["default"])
    config = {"drop_one_letter": values["DROP_ONE_LETTER"], "min_count": values["MIN_COUNT"],
              "glove": True, "embedding_dim": values["DIM"],
              "train_embedding": values["TRAIN_EMBEDDING"], "units": values["UNITS"],
              "dropout": values["DROPOUT"], "learning_rate": values["LEARNING_RATE"],
              "lr_plateau_factor": values["LR_PLATEAU_FACTOR"],
              "label_smoothing": values["LABEL_SMOOTHING"], "batch_size": values["BATCH_SIZE"],
              "epochs": values["EPOCHS"], "patience": values["PATIENCE"]}
    width = values["BEAM_WIDTHS"][0] if values["BEAM_WIDTHS"] else 1
    return config, decoding_label(width, values["LENGTH_PENALTY"], values["NO_REPEAT_NGRAM"])

class SharedData:
    """The shared subset's features and captions, prepared once per cleaning option."""

    def __init__(self):
        self.names, features = utils.load_features(FEATURES)
        self.features = np.asarray(features, "float32")
        self.images_dir, self.captions_file, self.split_files = utils.find_dataset_files(SHARED)
        self._prepared = {}
        self.glove = None

    def prepared(self, drop_one_letter):
        if drop_one_letter not in self._prepared:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the token file names 8,090 images; 875 are here
                self._prepared[drop_one_letter] = utils.prepare_dataset(
                    self.captions_file, self.images_dir, self.split_files,
                    drop_one_letter=drop_one_letter)[0]
        return self._prepared[drop_one_letter]

    def embedding(self, vocab, seed):
        if self.glove is None:  # every training word's vector, read from the PyPI package once
            words = {w for c in utils.split_captions(self.prepared(False), "train") for w in c.split()}
            self.glove = utils.load_glove(words, "pypi", 50)[0]
        return utils.embedding_matrix(vocab, self.glove, 50, seed=seed)

    def captions(self, config):
        """The vocabulary of `config`, and (image rows, tokens) of the train and dev captions."""
        prepared = self.prepared(config["drop_one_letter"])
        vocab = utils.build_vocabulary(utils.split_captions(prepared, "train"), config["min_count"])
        return vocab, *(utils.encode_captions(prepared, vocab, split, self.names)
                        for split in ("train", "val"))


def train_ours(data, config, seed, run_dir):
    """The notebook 04 path: returns (best model, vocabulary, training seconds, epochs run)."""
    vocab, (rows, tokens), (val_rows, val_tokens) = data.captions(config)
    keras.utils.set_random_seed(seed)
    model = utils.build_caption_model(
        len(vocab), data.features.shape[1], data.embedding(vocab, seed) if config["glove"] else None,
        config["embedding_dim"], config["units"], config["dropout"], config["train_embedding"],
        utils.feature_statistics(data.features[np.unique(rows)]))
    utils.compile_model(model, config["learning_rate"], label_smoothing=config["label_smoothing"])
    train = utils.caption_dataset(data.features, rows, tokens, config["batch_size"], seed=seed)
    val = utils.caption_dataset(data.features, val_rows, val_tokens, 256, shuffle=False)
    start = time.perf_counter()
    history = utils.train_caption_model(model, train, val, run_dir, config["epochs"],
                                        config["patience"], config["lr_plateau_factor"], verbose=0)
    seconds = time.perf_counter() - start
    return keras.models.load_model(Path(run_dir) / "model.keras"), vocab, seconds, len(history)


def train_baseline(data, seed, epochs=None):
    """The seeds' recipe (module docstring): prefix samples, one-hot targets, raw features."""
    config = BASELINE | ({"epochs": epochs} if epochs else {})
    vocab, (rows, tokens), (val_rows, val_tokens) = data.captions(config)
    keras.utils.set_random_seed(seed)
    model = utils.build_caption_model(len(vocab), data.features.shape[1], data.embedding(vocab, seed),
                                      units=config["units"], dropout=config["dropout"])
    prefix_length = vocab.sequence_length - 1
    prefixes = utils.prefix_model(model, prefix_length)
    prefixes.compile(keras.optimizers.Adam(config["learning_rate"]), "categorical_crossentropy")

    def samples(rows, tokens):
        prefix, next_word, owner = utils.expand_prefixes(tokens, prefix_length)
        return [data.features[rows[owner]], prefix], keras.utils.to_categorical(next_word, len(vocab))

    x, y = samples(rows, tokens)
    start = time.perf_counter()
    fit = prefixes.fit(x, y, batch_size=config["batch_size"], epochs=config["epochs"], verbose=0,
                       validation_data=samples(val_rows, val_tokens), callbacks=[
                           keras.callbacks.EarlyStopping(patience=config["patience"],
                                                         restore_best_weights=True)])
    return model, vocab, time.perf_counter() - start, len(fit.history["loss"])


def score(model, vocab, data, config, decodings):
    """Dev-split scores of each decoding: BLEU-1..4, CIDEr-D and the distinct-caption count."""
    prepared = data.prepared(config["drop_one_letter"])
    row = {n: i for i, n in enumerate(data.names)}
    dev = [n for n in prepared.names("val") if n in row]
    features = data.features[[row[n] for n in dev]]
    references = [prepared.images[n]["references"] for n in dev]
    decoder = utils.CaptionDecoder(model, vocab)
    scores = {}
    for label, (width, penalty, no_repeat) in decodings.items():
        ids = (utils.greedy_search(decoder, features, no_repeat) if width == 1
               else utils.beam_search(decoder, features, width, penalty, no_repeat))
        hypotheses = [vocab.decode(c).split() for c in ids]
        s = utils.caption_scores(references, hypotheses, meteor=False)
        scores[label] = {k: round(v, 4) for k, v in s.items() if v is not None}
        scores[label]["distinct_captions"] = len({" ".join(h) for h in hypotheses})
        scores[label]["example"] = " ".join(hypotheses[0])
    return scores


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
    default, decoding = notebook_defaults()
    configs = {} if args.variants_only else {"default": default}
    if args.tune:
        configs |= {name: default | change for name, change in VARIANTS.items()
                    if not args.only or name in args.only}
    if args.quick:
        configs = {k: c | {"epochs": 3} for k, c in configs.items()}
    results = {"baseline": []}
    for seed in [] if args.variants_only else seeds:
        model, vocab, seconds, epochs = train_baseline(data, seed, 3 if args.quick else None)
        results["baseline"].append({"seed": seed, "train_seconds": seconds, "epochs": epochs,
                                    "scores": score(model, vocab, data, BASELINE,
                                                    BASELINE_DECODINGS)})
        print("baseline", seed, results["baseline"][-1]["scores"], file=sys.stderr)
    for name, config in configs.items():
        results[name] = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as run_dir:
                model, vocab, seconds, epochs = train_ours(data, config, seed, run_dir)
            results[name].append({"seed": seed, "train_seconds": seconds, "epochs": epochs,
                                  "scores": score(model, vocab, data, config, DECODINGS)})
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
                        for metric in ("bleu4", "cider_d")} for label in DECODINGS}

    by_decoding = with_rule = None
    if {"default", "baseline"} <= set(summary):
        by_decoding = gains("greedy")
        with_rule = gains(decoding_label(1, 0.0, 2))[decoding]
    return {
        "bleu4_gain_over_baseline": by_decoding and by_decoding[decoding]["bleu4"],
        "cider_gain_over_baseline": by_decoding and by_decoding[decoding]["cider_d"],
        "default_decoding": decoding,
        "gains_by_decoding": by_decoding,
        "gains_over_baseline_with_repeat_rule": with_rule,
        "summary": summary,
        "settings": {"baseline": BASELINE, "configurations": configs},
        "data": {"features": f"{FEATURES.name} ({data.features.shape[1]}-d)",
                 "train_images": len(data.prepared(False).names("train")),
                 "dev_images": len(data.prepared(False).names("val"))},
        "seeds": max(len(runs) for runs in results.values()), "quick": args.quick}


if __name__ == "__main__":
    main()
