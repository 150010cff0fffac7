"""Caption quality on real photos: our default configuration against the seed projects' recipe,
and where the difference comes from.

    python benchmarks/quality.py [--quick] [--seeds N] [--tune] [--full] [--only NAME ...] [--runs DIR]
    python benchmarks/quality.py --full --tables

Both train on the official train images of the shared Flickr8k subset (753 of them, 5 captions
each), from the real ImageNet features in ../shared/flickr8k/features/ (an external .npz, as a
user would bring), pick their best epoch by validation loss on the dev images (113), and are
scored on those dev images by the COCO caption evaluation (PTB tokenizer; BLEU-1..4, METEOR,
ROUGE-L, CIDEr-D) against all five raw references, with nltk's BLEU beside it. The official test
images are not in the subset, so nothing here touches them.

- Ours: the defaults of the notebooks' `parameters` cells (read from the notebooks by papermill, so
  the benchmark measures exactly what a user runs), decoded greedily and with beam search (widths
  3 and 5), with and without length normalisation and the rule against repeated word pairs.
- Baseline, the seed projects' recipe (seed_recipe.py: their cleaning, raw features, one-hot
  prefix training, same architecture, best epoch on dev loss), decoded greedily (also scored with
  our repeat rule, reported beside); and the same recipe trained on our cleaning.

The decomposition goes from the seed recipe to ours one change at a time, same seeds: + our
cleaning (the recipe's training on our captions), + our training (our defaults, greedy), + our
decoding (utils.DEFAULT_DECODING). Each step's gain comes with a paired bootstrap interval over
the dev images (utils.compare_statistics: images resampled, every seed averaged), under two
tokenisations: the COCO evaluation's, and the same with one-letter words dropped from captions
and references alike (the seed recipe's own, which can never say "a").

`--tune` also trains each variant of VARIANTS (one change to the default each). `--full` tunes on
the whole official split instead (6,000 train and 1,000 dev photos, features only: SharedData's
`full`), without the seed recipe, into benchmarks/results/quality-full.json, where a seed
already stored of the same configuration is read back, not trained again. Each run records its
dev curve: per epoch, its seconds, validation loss and greedy BLEU-4 and CIDEr-D on dev (which
epoch each rule would pick). `--runs DIR` keeps every run's folder there: an interrupted benchmark
started again resumes its run, and reads finished runs back instead of training them again.
Every score and caption is written to benchmarks/results/quality.json (`--out`), except with
`--quick`. Last line:
one JSON object with `decomposition`, and per configuration and decoding the mean and standard
deviation over seeds of every score.
"""
import os
from pathlib import Path

import utils

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
utils.hide_tensorflow_startup_lines()  # before an import below loads TensorFlow (utils/startup.py)
import our_recipe as recipe
import seed_recipe

from shared_data import REPO, SharedData

RESULTS = REPO / "benchmarks" / "results" / "quality.json"
FULL_RESULTS = REPO / "benchmarks" / "results" / "quality-full.json"
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
    "minimum gain 0 (the defaults before)": {"min_gain": 0.0},
    "minimum gain 0.002": {"min_gain": 0.002},
}
DECODINGS = [utils.DecodingSetting(*d) for d in (
    (1, 0.0, 0), (3, 0.0, 0), (5, 0.0, 0), (3, 1.0, 0), (5, 1.0, 0),
    (1, 0.0, 2), (3, 1.0, 2), (5, 1.0, 2))]
# The seeds decode greedily, with nothing ruled out but what every decoding here rules out
# (stage 5: <unk>, <pad>, <start>); also scored with our repeat rule, to show what it adds.
BASELINE_DECODINGS = [utils.DecodingSetting(1, 0.0, 0), utils.DecodingSetting(1, 0.0, 2)]
# The decomposition: each step adds one of ours to the step before (configuration, decoding).
STEPS = {"seed recipe": ("baseline", "greedy"),
         "+ our cleaning": ("baseline, our cleaning", "greedy"),
         "+ our training": ("default", "greedy"),
         "+ our decoding": ("default", utils.DEFAULT_DECODING.slug)}
# Tokenisations the decomposition is scored under: does each drop one-letter words?
TOKENISATIONS = {"coco": False, "one_letter_words_dropped": True}


def decompose(results, shared):
    """Each step of STEPS against the one before, and the last against the first, under each
    tokenisation: scores and gains with their paired bootstrap intervals over images."""
    names, _, references = shared.split("val")
    runs = {step: [[run["scores"][decoding]["captions"][n] for n in names]
                   for run in results[config]] for step, (config, decoding) in STEPS.items()}
    steps = list(STEPS)
    out = {"steps": {step: {"configuration": c, "decoding": d} for step, (c, d) in STEPS.items()}}
    for tokenisation, drop_one_letter in TOKENISATIONS.items():
        grouped, missing = utils.grouped_statistics(references, runs, drop_one_letter)
        out[tokenisation] = {later: utils.compare_statistics(grouped[earlier], grouped[later])
                             for earlier, later in zip(steps, steps[1:])}
        out[tokenisation]["total"] = utils.compare_statistics(grouped[steps[0]], grouped[steps[-1]])
        out[tokenisation]["missing"] = missing
    return out


def main():
    parser = recipe.arguments(
        __doc__, RESULTS, FULL_RESULTS, "also train every variant",
        "tune on the whole official split (6,000 train, 1,000 dev photos): no baseline, "
        "no decomposition")
    parser.add_argument("--only", nargs="*", help="variants to tune (default: all)")
    parser.add_argument("--variants-only", action="store_true",
                        help="a further tuning round: no baseline, no default, no decomposition")
    args = recipe.parse(parser, tuning_table)
    seeds = range(1 if args.quick else args.seeds)
    data = SharedData(full=args.full)
    default = recipe.notebook_defaults()
    configs = {} if args.variants_only else {"default": default}
    if args.tune:
        configs |= {name: default | change for name, change in VARIANTS.items()
                    if not args.only or name in args.only}
    if args.quick:
        configs = {k: c | {"epochs": 3} for k, c in configs.items()}
    # The comparison with the seed recipe stays the subset's (docs/results.md): --full tunes ours.
    baselines = {} if args.variants_only or args.full else {
        "baseline": seed_recipe.CLEANING,
        "baseline, our cleaning": {k: default[k] for k in seed_recipe.CLEANING}}
    # The whole split's tuning grows over several invocations: the stored configurations that
    # this one does not train are kept.
    stored = (utils.read_json(args.out) if args.full and not args.quick
              and Path(args.out).is_file() else {"runs": {}, "settings": {"configurations": {}}})
    results = dict(stored["runs"])  # each of `configs`', in turn, read back or run
    configs_run, configs = configs, {k: v for k, v in stored["settings"]["configurations"].items()
                                     if k in results} | configs
    for name, cleaning in baselines.items():
        results[name] = []
        for seed in seeds:
            model, vocab, seconds, epochs = seed_recipe.train(data, seed, 3 if args.quick else None,
                                                              cleaning)
            recipe.record(results[name], name, seed, seconds, epochs, recipe.score(
                utils.CaptionDecoder(model, vocab), data, cleaning["drop_one_letter"],
                BASELINE_DECODINGS))
    for name, config in configs_run.items():
        results[name] = []
        # A seed stored of this very configuration (the default may have changed since) is
        # read back, not trained again: seeds add up across machines.
        kept_config = stored["settings"]["configurations"].get(name)
        kept_runs = (stored["runs"].get(name, [])
                     if kept_config and recipe.as_today(config, kept_config) == config else [])
        for seed in seeds:
            kept = recipe.read_back(kept_runs, seed)
            if kept:
                results[name].append(kept)
                continue
            with recipe.run_folder(args.runs, name, config, seed) as run_dir:
                model, vocab, seconds, curve = recipe.train_ours(data, config, seed, run_dir)
            recipe.record(results[name], name, seed, seconds, len(curve), recipe.score(
                utils.CaptionDecoder(model, vocab), data, config["drop_one_letter"], DECODINGS),
                curve=curve)
        if not args.quick:  # kept as it grows: a long run can be cut short
            utils.write_json(args.out, make_report(results, configs, data, args) | {"runs": results})
    report = make_report(results, configs, data, args)
    if baselines:
        report = {"decomposition": decompose(results, data)} | report
    recipe.publish(args, report, results)


def tuning_table(report):
    """docs/results.md's tuning table of a stored report: per configuration, the epochs and time
    it trained, greedy and beam 3 BLEU-4 / CIDEr-D, the default decoding's BLEU-4 / METEOR /
    CIDEr-D, and its difference from the default with the paired interval (means over seeds)."""
    default = utils.DEFAULT_DECODING.slug
    header = ["configuration", "epochs", "training", "greedy: BLEU-4 / CIDEr-D",
              "beam 3: BLEU-4 / CIDEr-D", "our default decoding: BLEU-4 / METEOR / CIDEr-D",
              "BLEU-4 minus the default's", "CIDEr-D minus the default's"]
    lines = [recipe.markdown_row(header), recipe.markdown_row(["---"] * len(header))]
    for name, entry in report["summary"].items():
        mean = {slug: {k: v["mean"] for k, v in entry[slug].items()} for slug in
                ("greedy", "beam3", default)}
        difference = (report["difference_from_default"] or {}).get(default, {}).get(name, {})
        lines.append(recipe.markdown_row(
            [name, ", ".join(map(str, entry["epochs"])),
             f"{entry['train_seconds']['mean'] / 60:.0f} min",
             *(f"{mean[s]['bleu4']:.3f} / {mean[s]['cider_d']:.3f}" for s in ("greedy", "beam3")),
             f"{mean[default]['bleu4']:.3f} / {mean[default]['meteor']:.3f} / "
             f"{mean[default]['cider_d']:.3f}"]
            + [recipe.gain_cell(difference.get(k)) for k in ("bleu4", "cider_d")]))
    return "\n".join(lines)


def make_report(results, configs, data, args):
    """Means and spreads of every score per configuration and decoding, each variant's difference
    from the default (paired intervals over the dev images), and what was run."""
    ours = {name: runs for name, runs in results.items() if name in configs and runs}
    names, _, raw = data.split("val")
    return {
        "summary": {name: recipe.summarise(runs) for name, runs in results.items() if runs},
        "difference_from_default": recipe.differences(ours, dict(zip(names, raw)), DECODINGS,
                                                      "default") if "default" in ours else None,
        "default_decoding": utils.DEFAULT_DECODING.slug,
        "settings": {"baseline": seed_recipe.CLEANING | seed_recipe.MODEL | seed_recipe.TRAINING,
                     "configurations": configs},
        "data": {"features": f"{data.path.name} ({data.features.shape[1]}-d)",
                 "train_images": len(data.prepared(False).names("train")),
                 "dev_images": len(data.prepared(False).names("val"))},
        "seeds": max(len(runs) for runs in results.values()), "quick": args.quick}


if __name__ == "__main__":
    main()
