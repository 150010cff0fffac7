"""Our recipe, as the notebooks run it, for the benchmarks: the defaults read from the notebooks'
`parameters` cells, the notebook 04 training path on the shared Flickr8k subset, and the
notebook 05 evaluation of the dev split (the COCO evaluation, nltk's BLEU beside it)."""
import argparse
import ast
import contextlib
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import papermill

import utils
from shared_data import REPO

# What the notebooks set of a model; the rest comes from the data (sizes, a grid's positions).
MODEL_FIELDS = set(utils.ModelConfig.__dataclass_fields__) - {"vocab_size", "feature_dim",
                                                               "positions"}
TRAINING_FIELDS = set(utils.TrainingConfig.__dataclass_fields__) - {"seed"}
SCORES = (*utils.COMPARED_SCORES, "nltk_bleu4")  # summarised over seeds
GREEDY = utils.DecodingSetting(1, 0.0, 0)  # the decoding of the per-epoch dev curve
CURVE_FILE = "dev_curve.json"  # a benchmark run folder's per-epoch seconds, loss and dev scores
SETTINGS_FILE = "benchmark_settings.json"  # the configuration a kept run folder was trained with
RESULTS_DIR = REPO / "benchmarks" / "results"  # every benchmark's stored results
# The best single model on dev (encoders.py's row, the shipped run): its results file and name,
# read back by the benchmarks that compare with it.
BEST_SINGLE = ("encoders-full.json", "par-inject, Lite0 + Lite2")


def notebook_defaults():
    """Our default settings: the `parameters` cells of notebooks 01, 03 and 04 as papermill reads
    them (so the benchmark measures what a user runs), named as the records name them."""
    values = {}
    for stem in ("01_prepare_captions", "03_glove_embeddings", "04_train_model"):
        for name, p in papermill.inspect_notebook(str(REPO / "notebooks" / f"{stem}.ipynb")).items():
            values[name] = ast.literal_eval(p["default"])
    model = utils.config_from_parameters(utils.ModelConfig, values, vocab_size=0, feature_dim=0,
                                         embedding_dim=values["DIM"])
    training = utils.config_from_parameters(utils.TrainingConfig, values)
    defaults = ({"drop_one_letter": values["DROP_ONE_LETTER"], "min_count": values["MIN_COUNT"],
                 "glove": True}
                | {f: getattr(model, f) for f in MODEL_FIELDS}
                | {f: getattr(training, f) for f in TRAINING_FIELDS})
    return json.loads(json.dumps(defaults))  # as a results file keeps them: a tuple as a list


class DevCurve(keras.callbacks.Callback):
    """Each epoch's seconds (training and validation loss), and its greedy captions of the dev
    images scored by the COCO evaluation without METEOR (BLEU-4, CIDEr-D): the epoch a caption
    score would pick, beside the one validation loss picks. Kept in the run folder as it grows
    (CURVE_FILE), so that a resumed run keeps its earlier epochs'."""

    def __init__(self, path, vocab, features, references):
        super().__init__()
        self.path, self.vocab, self.features, self.references = path, vocab, features, references
        self.epochs = utils.read_json(path) if path.is_file() else []

    def on_train_begin(self, logs=None):
        self.decoder = utils.CaptionDecoder(self.model, self.vocab)

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        captions = [c.text for c in utils.decode(self.decoder, self.features, GREEDY)]
        scores, _ = utils.coco_scores(self.references, captions, meteor=False)
        self.epochs = [e for e in self.epochs if e["epoch"] < epoch + 1] + [
            {"epoch": epoch + 1, "seconds": round(seconds, 1), "val_loss": round(logs["val_loss"], 5)}
            | {f"greedy_{k}": round(scores[k], 4) for k in ("bleu4", "cider_d")}]
        utils.write_json(self.path, self.epochs)


def run_configs(config, vocab, data, seed=0):
    """(ModelConfig, TrainingConfig) of a benchmark configuration (notebook_defaults' keys) for
    this vocabulary and these captions' features (grids [images, positions, dim] give positions)."""
    grid = data.features.ndim == 3  # SharedData(grid=True)
    model_config = utils.ModelConfig(len(vocab), data.features.shape[-1],
                                     positions=data.features.shape[1] if grid else None,
                                     **{f: config[f] for f in MODEL_FIELDS})
    return model_config, utils.TrainingConfig(seed=seed,
                                              **{f: config[f] for f in TRAINING_FIELDS})


def train_ours(shared, config, seed, run_dir, data=None):
    """The notebook 04 path, with the dev curve (DevCurve) kept: returns (best model, vocabulary,
    training seconds, the curve: one entry per epoch). A `run_dir` that holds an interrupted run
    of the same configuration and seed resumes it. `data`: the CaptionData to train on instead
    of the shared captions (a student's, with what its teachers say)."""
    vocab, captions = shared.captions(config["min_count"], config["drop_one_letter"])
    data = data or captions
    model_config, training = run_configs(config, vocab, data, seed)
    embedding = shared.embedding(vocab, seed) if config["glove"] else None
    model = utils.build_model(model_config, training, embedding, data.feature_statistics())
    _, features, references = shared.split("val", config["drop_one_letter"])
    curve = DevCurve(Path(run_dir) / CURVE_FILE, vocab, features, references)
    if not utils.training_finished(run_dir):
        utils.train_caption_model(model, data, run_dir, training, [curve], verbose=0)
    model.load_weights(Path(run_dir) / utils.WEIGHTS_FILE)  # the best epoch's
    return model, vocab, sum(e["seconds"] for e in curve.epochs), curve.epochs


def as_today(config, kept):
    """A configuration `kept` since an earlier day, with the fields of today's `config` added to
    the records since then given the value they had before (utils.ADDED_LATER)."""
    added = {field.split(".")[1]: value for field, value in utils.ADDED_LATER.items()
             if field.split(".")[1] in config}
    return added | kept


def read_elsewhere(elsewhere, default):
    """Rows of other benchmarks' stored results whose benchmark used today's defaults, by our
    name: `elsewhere` maps our name to (their results file, their name). (The ensemble benchmark
    stores one speed, our default decoding's: by its slug here, as ours are.)"""
    rows = {}
    for name, (file, theirs) in elsewhere.items():
        stored = utils.read_json(RESULTS_DIR / file) if (RESULTS_DIR / file).is_file() else None
        if stored and as_today(default, stored["settings"]["defaults"]) == default:
            rows[name] = [run | ({"captions_per_second": {utils.DEFAULT_DECODING.slug: speed}}
                                 if isinstance(speed := run.get("captions_per_second"), float)
                                 else {}) for run in stored["runs"][theirs]]
    return rows


def stored_runs(args, **settings):
    """The runs already written to `args.out`, by name (`{}` with --quick or no file), when its
    settings are today's: a run whose seed is there is read back instead of trained again, so
    that seeds add up across machines whose run folders are gone. A file of other settings is
    refused, naming the first that differs. `settings`: the report's, by key; a dict among them
    (a configuration) compared as_today."""
    if args.quick or not Path(args.out).is_file():
        return {}
    stored = utils.read_json(args.out)
    for key, value in settings.items():
        kept = stored["settings"].get(key)
        if (as_today(value, kept) if isinstance(value, dict) and kept else kept) != value:
            sys.exit(f"{args.out} holds runs of another {key} than today's ({kept} against "
                     f"{value}): move it away, or give another --out")
    return stored


def read_back(stored, seed):
    """The run of this seed among `stored` (a list of record's runs), or None."""
    return next((run for run in stored if run["seed"] == seed), None)


def kept_folder(runs_dir, name, seed):
    """The folder in `runs_dir` where run_folder keeps the run `name` of this seed."""
    return Path(runs_dir) / f"{re.sub(r'[^a-z0-9.]+', '-', name.lower())}-seed{seed}"


@contextlib.contextmanager
def run_folder(runs_dir, name, config, seed):
    """Where a benchmark run trains: a temporary folder, or in `runs_dir` a kept one named after
    the configuration and seed, where an interrupted run resumes, a finished one is read back
    instead of trained again, and later decodings find its weights. A kept folder of the same
    name trained with other settings is refused, never resumed."""
    if runs_dir is None:
        with tempfile.TemporaryDirectory() as folder:
            yield folder
        return
    folder = kept_folder(runs_dir, name, seed)
    folder.mkdir(parents=True, exist_ok=True)
    settings = folder / SETTINGS_FILE
    if settings.is_file() and as_today(config, utils.read_json(settings)) != config:
        sys.exit(f"{folder} holds a run of {name!r} with other settings than today's "
                 f"({settings}): move it away, or give another --runs folder")
    utils.write_json(settings, config)
    yield folder


def score(decoder, shared, drop_one_letter, decodings):
    """Dev-split scores of each decoding by a decoder (a model's, or an Ensemble; utils.evaluate),
    the distinct-caption count and every caption, by image, keyed by the decoding's slug."""
    names, features, references = shared.split("val", drop_one_letter)
    training = [c.split() for c in utils.split_captions(shared.prepared(drop_one_letter), "train")]
    results = utils.evaluate(decoder, names, features, references, decodings, training,
                             verbose=False)
    return {result.decoding.slug: {k: round(v, 4) for k, v in result.scores.items() if v is not None}
            | {"distinct_captions": result.diagnostics["distinct_captions"],
               "captions": result.captions} for result in results}


def captions_per_second(decoder, features, setting):
    """Captions a second of the incremental batched search, over `features` (after a warm-up)."""
    utils.decode(decoder, features[:8], setting)  # traces the step for the batch shapes
    start = time.perf_counter()
    utils.decode(decoder, features, setting)
    return len(features) / (time.perf_counter() - start)


def differences(results, references, decodings, baseline):
    """Each configuration's captions against the `baseline` configuration's, per decoding: scores,
    gains and paired bootstrap intervals over images (utils.compare_statistics, every seed
    averaged). `references`: the dev images' raw references, by name. A configuration not
    decoded one way (another benchmark's row) is left out of that decoding's."""
    names = list(references)
    out = {}
    for setting in decodings:
        grouped, missing = utils.grouped_statistics(list(references.values()), {
            name: [[run["scores"][setting.slug]["captions"][n] for n in names] for run in runs]
            for name, runs in results.items()
            if all(setting.slug in run["scores"] for run in runs)})
        out[setting.slug] = {name: utils.compare_statistics(grouped[baseline], statistics)
                             for name, statistics in grouped.items()
                             if name != baseline and baseline in grouped}
        out[setting.slug]["missing"] = missing
    return out


def markdown_row(cells):
    return "| " + " | ".join(cells) + " |"


def gain_cell(difference):
    """A paired difference as a table cell: the gain and its interval; empty where it is missing."""
    if not difference:
        return ""
    low, high = difference["interval"]
    return f"{difference['gain']:+.3f} ({low:+.3f} to {high:+.3f})"


def summarise(runs):
    """Mean and standard deviation over seeds of every number, per decoding."""
    out = {"seeds": [r["seed"] for r in runs],
           "train_seconds": spread([r["train_seconds"] for r in runs]),
           "epochs": [r["epochs"] for r in runs]}
    for slug in runs[0]["scores"]:
        scores = [r["scores"][slug] for r in runs]
        out[slug] = {k: spread([s[k] for s in scores])
                     for k in (*SCORES, "distinct_captions") if k in scores[0]}
        out[slug]["words_a_caption"] = spread([mean_words(s["captions"].values()) for s in scores])
    return out


def machine():
    """The processor and cores a time was measured on: the same benchmark's speeds have differed
    about threefold between sessions' 2-core machines (docs/results.md)."""
    cpuinfo = Path("/proc/cpuinfo")
    models = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text()) if cpuinfo.is_file() else []
    return {"cpu": models[0] if models else platform.machine(), "cores": os.cpu_count()}


def mean_words(captions):
    """The mean length of captions (each a sentence of space-separated words), in words."""
    return float(np.mean([len(caption.split()) for caption in captions]))


def spread(values):
    """Mean and standard deviation of numbers (over seeds, say), rounded."""
    return {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4)}


def arguments(doc, results, full_results, tune_help, full_help):
    """The command line the quality benchmarks share (`--tune` where `tune_help` says what it
    tunes, `--full` where `full_help` says what it is); read it with `parse`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, at most 3 epochs")
    parser.add_argument("--seeds", type=int, default=3)
    if tune_help:  # a benchmark with something to tune
        parser.add_argument("--tune", action="store_true", help=tune_help)
    if full_help:  # a benchmark of the subset, or with --full of the whole split
        parser.add_argument("--full", action="store_true", help=full_help)
    else:  # a benchmark of the whole split only
        parser.set_defaults(full=True)
    parser.add_argument("--out", help=f"where every score is written (default {results.name}, "
                                      f"with --full {full_results.name})")
    parser.add_argument("--runs", help="keep each run's folder in this one: an interrupted "
                                       "benchmark resumes there, a finished run is not trained again")
    parser.add_argument("--tables", action="store_true",
                        help="print the stored results (--out) as docs/results.md's tables; "
                             "train nothing")
    parser.set_defaults(default_out={False: str(results), True: str(full_results)})
    return parser


def parse(parser, tables):
    """The arguments of a parser from `arguments`, `--out` defaulting to the split's results.
    With --tables, as argparse with --help, it prints `tables(stored results)` and exits."""
    args = parser.parse_args()
    args.out = args.out or args.default_out[args.full]
    if args.tables:
        if not Path(args.out).is_file():
            parser.error(f"--tables: no stored results at {args.out}; run the benchmark first")
        print(tables(utils.read_json(args.out)))
        sys.exit()
    return args


def publish(args, report, runs):
    """A benchmark's end: its report with every run's figures written to `args.out` (not with
    --quick), and the report printed as the last line, one JSON object."""
    if not args.quick:
        utils.write_json(args.out, report | {"runs": runs})
    print(json.dumps(report))


def record(runs, name, seed, seconds, epochs, scores, **measured):
    """One trained run's figures appended to `runs` (with anything else `measured`: our runs'
    dev curve; and the machine, which its seconds depend on), and a line of its BLEU-4 and
    CIDEr-D per decoding on stderr, so that a long benchmark shows progress."""
    runs.append({"seed": seed, "train_seconds": seconds, "epochs": epochs, "scores": scores,
                 "machine": machine(), **measured})
    print(name, seed, {k: (v["bleu4"], v["cider_d"]) for k, v in scores.items()}, file=sys.stderr)
