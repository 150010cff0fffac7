"""Where to put the image: merge, the three injects and attention side by side on real photos.

    python benchmarks/architectures.py [--quick] [--full] [--seeds N] [--tune] [--architectures NAME ...]

Tanti, Gatt and Camilleri's comparison ("Where to put the image in an image caption generator",
2018), with our defaults (the notebooks' `parameters` cells) and only ARCHITECTURE changed: each
architecture trains on the 753 official train images of the shared Flickr8k subset, from their
real ImageNet features, picks its best epoch by validation loss on the 113 dev images, and is
scored on those dev images by the COCO evaluation (nltk's BLEU beside it), decoded greedily, with
beam 3 as the paper decodes, and with our default decoding. Each architecture's difference from
merge comes with a paired bootstrap interval over the dev images (utils.compare_statistics:
images resampled, every seed averaged). Attention (Xu et al. 2015) reads the same network's 7x7
grids of the same photos (shared_data.GRIDS), whose mean is the others' pooled vector.

The Transformer reads either kind of memory: on the subset it is trained on the pooled vectors
("transformer") and on the grids ("transformer, grid"); with one block instead of two
("transformer, 1 block") it costs less an epoch. Its entries carry a second paired
difference, against the best inject by CIDEr-D, and its greedy decoding's speed without its cache
of keys and values (the whole caption so far read again at every word); the variants' a third,
against the default Transformer.

`--full` trains on the whole official split instead: the 6,000 train photos and the 1,000 dev
photos of shared_data.TRAINVAL, a features-only dataset (pooled vectors only: attention, which
needs grids, is left out, saying so); its results go to benchmarks/results/architectures-full.json.

`--architectures` trains only those, by name ("transformer" alone, "transformer, grid" its
variant); the stored runs of the others (in `--out`) are kept and the report is made from all of
them, so one architecture can be added without retraining the rest. A seed already stored there
(written with today's defaults) is read back, not trained again: `--seeds 3` on a file of one
seed trains seeds 1 and 2, on this machine or another.

`--tables` trains nothing: it prints the stored results (`--out`) as the Markdown tables of
docs/results.md, one per decoding and one of the costs, beside the published figures.

`--tune` also trains each inject with one change of its obvious knobs (TUNING: the units, the
dropout, the learning rate): one round, on dev, with the first seed only (a screen: a variant
that looks better deserves the full seeds before it becomes a default). Every score and caption
is written to benchmarks/results/architectures.json (`--out`), except with `--quick` (1 seed, at
most 3 epochs). Last line: one JSON object, `architectures` holding one entry per architecture
name.
"""
import os
import time

import utils

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
utils.hide_tensorflow_startup_lines()  # before an import below loads TensorFlow (utils/startup.py)
import keras
import numpy as np
import our_recipe as recipe

from shared_data import GRIDS, REPO, SharedData

RESULTS = REPO / "benchmarks" / "results" / "architectures.json"
FULL_RESULTS = REPO / "benchmarks" / "results" / "architectures-full.json"
DECODINGS = [utils.DecodingSetting(1, 0.0, 0),   # greedy
             utils.DecodingSetting(3, 0.0, 0),   # beam 3, as the paper decodes
             utils.DEFAULT_DECODING]             # ours: beam 5, length penalty 1, no repeated pair
# Published figures (BLEU-4 / METEOR / CIDEr, full Flickr8k test split), not measured here: Tanti,
# Gatt and Camilleri 2018 (beam 3, COCO evaluation; means of three runs) and Xu et al. 2015's
# Table 1 (soft attention; the paper gives no CIDEr).
PUBLISHED = {"merge": "0.178 / 0.193 / 0.469", "init-inject": "0.191 / 0.194 / 0.481",
             "pre-inject": "0.190 / 0.191 / 0.469", "par-inject": "0.191 / 0.193 / 0.475",
             "attention": "0.195 / 0.189 / -"}
# Transformers beside the default one: on the grids (subset only) and with one block (cheaper).
TRANSFORMER_VARIANTS = {"transformer, grid": {"architecture": "transformer", "grid": True},
                        "transformer, 1 block": {"architecture": "transformer", "blocks": 1}}
# What the benchmark compares, with every seed (the tuning round trains the first seed only).
COMPARED = (*utils.ARCHITECTURES, *TRANSFORMER_VARIANTS)
INJECTS = ("init-inject", "pre-inject", "par-inject")
ROWS_UNCACHED = 200  # images captioned by the uncached greedy search (it is slow)
# One round of tuning for each inject, one change of the default each (merge had five rounds).
TUNING = {"units 512": {"units": 512}, "dropout 0.3": {"dropout": 0.3},
          "learning rate 2e-3": {"learning_rate": 2e-3}}


def uncached_captions_per_second(model, vocab, features):
    """Captions a second of greedy search that reads the whole caption so far again at every
    word (the full model, no cache): what a step would cost without `step`."""
    start = time.perf_counter()
    tokens = np.full((len(features), 1), vocab.start_id, "int32")
    done = np.zeros(len(features), bool)
    while not done.all() and tokens.shape[1] <= vocab.max_length + 1:
        probs = keras.ops.convert_to_numpy(model((features, tokens))[:, -1])
        words = np.where(done, vocab.pad_id, probs.argmax(1))
        done |= words == vocab.end_id
        tokens = np.concatenate([tokens, words[:, None].astype("int32")], 1)
    return len(features) / (time.perf_counter() - start)


def mean_speed(runs):
    """Captions a second per decoding, the mean over `runs`; None for runs stored before the
    benchmark measured it."""
    if "captions_per_second" not in runs[0]:
        return None
    return {s: round(sum(r["captions_per_second"][s] for r in runs) / len(runs), 1)
            for s in runs[0]["captions_per_second"]}


def tables(report):
    """docs/results.md's tables of a stored report: scores (mean ± std over seeds) and the
    difference from merge (with its interval) per decoding, then parameters and costs."""
    scores = ("bleu4", "meteor", "rouge_l", "cider_d")
    compared = ("bleu4", "meteor", "cider_d")
    names = {"bleu4": "BLEU-4", "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider_d": "CIDEr-D"}
    header = (["architecture"] + [names[k] for k in scores]
              + [f"{names[k]} minus merge's" for k in compared]
              + ["published: BLEU-4 / METEOR / CIDEr"])
    lines = []
    for slug in report["settings"]["decodings"]:
        label = utils.DecodingSetting.from_slug(slug).label
        lines += [f"Decoded with {label}:", "", recipe.markdown_row(header),
                  recipe.markdown_row(["---"] * len(header))]
        for name, entry in report["architectures"].items():
            difference = entry["difference_from_merge"].get(slug, {})
            lines.append(recipe.markdown_row(
                [name] + [f"{entry[slug][k]['mean']:.3f} ± {entry[slug][k]['std']:.3f}"
                          for k in scores]
                + [recipe.gain_cell(difference.get(k)) for k in compared]
                + [PUBLISHED.get(name, "-")]))
        lines.append("")
    # The Transformers against the best inject, and its variants against the default one.
    for key in ("difference_from_best_inject", "difference_from_transformer"):
        against = {name: entry[key] for name, entry in report["architectures"].items()
                   if key in entry}
        if not against:
            continue
        baseline = next(iter(against.values())).get("inject", "transformer")
        header = ["model", "decoding"] + [f"{names[k]} minus {baseline}'s" for k in compared]
        lines += [recipe.markdown_row(header), recipe.markdown_row(["---"] * len(header))]
        lines += [recipe.markdown_row(
            [name, utils.DecodingSetting.from_slug(slug).label]
            + [recipe.gain_cell(difference[slug][k]) for k in compared])
            for name, difference in against.items()
            for slug in report["settings"]["decodings"] if slug in difference]
        lines.append("")
    header = ["architecture", "parameters", "epochs run (each seed)", "training a run",
              "captions a second, greedy", "captions a second, our default",
              "captions a second, greedy without a cache"]
    lines += [recipe.markdown_row(header), recipe.markdown_row(["---"] * len(header))]
    for name, entry in report["architectures"].items():
        speed = entry["captions_per_second"] or {}
        lines.append(recipe.markdown_row(
            [name, f"{entry['parameters']:,}" if entry["parameters"] else "-",
             ", ".join(map(str, entry["epochs"])),
             f"{entry['train_seconds']['mean']:.0f} ± {entry['train_seconds']['std']:.0f} s"]
            + [f"{speed[s]:,.0f}" if s in speed else "-" for s in
               (DECODINGS[0].slug, utils.DEFAULT_DECODING.slug, "uncached_greedy")]))
    return "\n".join(lines)


def make_report(args, results, stored, pooled, grids, left_out):
    """The benchmark's report on the runs in `results` so far: each architecture's scores, speed
    and cost, its differences from merge and (the Transformer's) from the best inject."""
    default = recipe.notebook_defaults()
    names, _, raw = pooled.split("val")
    # Against merge's runs, when there are some (`--quick --architectures` may have none).
    different = (recipe.differences(results, dict(zip(names, raw)), DECODINGS, "merge")
                 if "merge" in results else {s.slug: {"missing": None} for s in DECODINGS})
    # The Transformer's entries against the best inject too (by CIDEr-D, our default decoding).
    injects = [name for name in INJECTS if name in results]
    best_inject = max(injects, default=None, key=lambda name: sum(
        r["scores"][utils.DEFAULT_DECODING.slug]["cider_d"] for r in results[name]))
    against_inject = (recipe.differences(
        {name: runs for name, runs in results.items()
         if name == best_inject or name.startswith("transformer")},
        dict(zip(names, raw)), DECODINGS, best_inject) if best_inject else {})
    # The Transformer's variants against the default one: which memory, how many blocks.
    variants = {name: runs for name, runs in results.items() if name.startswith("transformer")}
    against_transformer = (recipe.differences(variants, dict(zip(names, raw)), DECODINGS,
                                              "transformer") if "transformer" in variants else {})
    entries = {name: {"parameters": runs[0].get("parameters"),  # runs stored before it: None
                      "captions_per_second": mean_speed(runs),
                      "seconds_per_epoch": round(sum(r["train_seconds"] / r["epochs"]
                                                     for r in runs) / len(runs), 1),
                      **recipe.summarise(runs),
                      "difference_from_merge": {slug: d[name] for slug, d in different.items()
                                                if name in d}}
               | ({"difference_from_best_inject": {"inject": best_inject} | {
                   slug: d[name] for slug, d in against_inject.items() if name in d}}
                  if name.startswith("transformer") and best_inject else {})
               | ({"difference_from_transformer": {slug: d[name] for slug, d
                                                   in against_transformer.items() if name in d}}
                  if name in TRANSFORMER_VARIANTS and against_transformer else {})
               for name, runs in results.items()}
    return {
        "architectures": {name: entries[name] for name in COMPARED if name in entries},
        "tuning": {name: entry for name, entry in entries.items() if name not in COMPARED},
        "missing": different[DECODINGS[0].slug]["missing"],
        "settings": {"defaults": default, "decodings": [s.slug for s in DECODINGS],
                     "tuning": TUNING if args.tune or stored.get("settings", {}).get("tuning")
                     else None},
        "data": {"features": f"{pooled.path.name} ({pooled.features.shape[1]}-d); attention: "
                             f"{GRIDS.name} ({'x'.join(map(str, grids.features.shape[1:]))})"
                             if grids else f"{pooled.path.name} ({pooled.features.shape[1]}-d)",
                 "left_out": stored.get("data", {}).get("left_out", {})
                 | {name: "the whole split has no grids" for name in left_out},
                 "train_images": len(pooled.prepared(False).names("train")),
                 "dev_images": len(names)},
        "seeds": 1 if args.quick else args.seeds, "quick": args.quick}


def main():
    parser = recipe.arguments(__doc__, RESULTS, FULL_RESULTS,
                              "also the tuning round of the injects",
                              "the whole official split (6,000 train, 1,000 dev photos), pooled "
                              "features only")
    parser.add_argument("--architectures", nargs="+", choices=COMPARED,
                        help="train only these; the others' runs are read from --out")
    args = recipe.parse(parser, tables)
    seeds = range(1 if args.quick else args.seeds)
    pooled, default = SharedData(full=args.full), recipe.notebook_defaults()
    configs = {name: default | {"architecture": name} for name in utils.ARCHITECTURES} | {
        name: default | values for name, values in TRANSFORMER_VARIANTS.items()}
    if args.architectures:  # by name: "transformer" is the default one, without its variants
        configs = {k: c for k, c in configs.items() if k in args.architectures}
    reads_grid = {name: config.get("grid") or utils.architecture_class(
        config["architecture"]).reads_grid for name, config in configs.items()}
    # The whole split has no grids: the models that read them are left out.
    left_out = sorted(name for name in configs if args.full and reads_grid[name])
    configs = {k: c for k, c in configs.items() if k not in left_out}
    grids = SharedData(grid=True) if any(reads_grid[name] for name in configs) else None
    if args.tune:
        configs |= {f"{name}, {change}": default | {"architecture": name} | values
                    for name in INJECTS
                    for change, values in TUNING.items()
                    if not args.architectures or name in args.architectures}
    if args.quick:
        configs = {k: c | {"epochs": 3} for k, c in configs.items()}
    # The runs stored so far (a first run has none): the other architectures' are kept as they
    # are, and a seed stored of these is read back, not trained again.
    stored = recipe.stored_runs(args, defaults=default, decodings=[s.slug for s in DECODINGS])
    results = dict(stored.get("runs", {}))  # each of `configs`', in turn, read back or run
    report = None  # of the runs so far
    for name, config in configs.items():
        results[name] = []
        data = grids if reads_grid.get(name) else pooled
        every_image = data.features  # train and dev: the speed of decoding many images
        for seed in seeds if name in COMPARED else seeds[:1]:
            kept = recipe.read_back(stored.get("runs", {}).get(name, []), seed)
            if kept:
                results[name].append(kept)
                continue
            with recipe.run_folder(args.runs, name, config, seed) as run_dir:
                model, vocab, seconds, curve = recipe.train_ours(data, config, seed, run_dir)
            decoder = utils.CaptionDecoder(model, vocab)
            recipe.record(results[name], name, seed, seconds, len(curve),
                          recipe.score(decoder, data, False, DECODINGS), curve=curve,
                          parameters=model.count_params(), captions_per_second={
                              s.slug: round(recipe.captions_per_second(decoder, every_image, s), 1)
                              for s in (DECODINGS[0], utils.DEFAULT_DECODING)}
                          | ({"uncached_greedy": round(uncached_captions_per_second(
                              model, vocab, np.asarray(every_image[:ROWS_UNCACHED], "float32")),
                              1)}
                             if config["architecture"] == "transformer" else {}))
        if not args.quick:  # kept as it grows: a long run can be cut short
            report = make_report(args, results, stored, pooled, grids, left_out)
            utils.write_json(args.out, report | {"runs": results})
    recipe.publish(args, report or make_report(args, results, stored, pooled, grids, left_out),
                   results)


if __name__ == "__main__":
    main()
