"""Ensembles: several trained runs decoding as one (utils.Ensemble), against one run alone.

    python benchmarks/ensemble.py [--quick] [--full] [--seeds N] [--runs DIR] [--ensembles NAME ...]
    python benchmarks/ensemble.py --full --tables

The members are the architectures benchmark's runs: our defaults (the notebooks' `parameters`
cells) with only ARCHITECTURE changed, seeds 0 to N-1, read back from the `--runs` folder that
`architectures.py --runs` keeps, or trained there when missing (about 10 minutes a run of the
whole split here). Each run alone and each of ENSEMBLES is scored on the dev images by the COCO
evaluation, with our default decoding and greedily; each ensemble's difference from one merge run
(its seeds averaged) is a paired bootstrap interval over the dev images, and its speed is the
captions a second of our default decoding over the dev images. `--full`: the whole official split
(6,000 train, 1,000 dev photos, pooled features). Results in benchmarks/results/ensemble.json
(ensemble-full.json, or `--out`); `--tables` prints them as docs/results.md's table.
`--ensembles` scores only those named: the others stored in `--out` stay, and a run alone stored
there (with today's defaults and seeds) is read back, not scored again. `--quick`: the subset, two
merge runs of 3 epochs and their ensemble, nothing written. Last line: one JSON object.
"""
import os

import utils

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
utils.hide_tensorflow_startup_lines()  # before an import below loads TensorFlow (utils/startup.py)
import our_recipe as recipe

from shared_data import REPO, SharedData

RESULTS = REPO / "benchmarks" / "results" / "ensemble.json"
FULL_RESULTS = REPO / "benchmarks" / "results" / "ensemble-full.json"
DECODINGS = [utils.DecodingSetting(1, 0.0, 0),   # greedy
             utils.DEFAULT_DECODING]             # ours: beam 5, length penalty 1, no repeated pair
# Each ensemble: its architectures, every seed of each.
ENSEMBLES = {"merge": ["merge"],
             "par-inject": ["par-inject"],
             "merge and par-inject": ["merge", "par-inject"],
             "the four LSTMs": ["merge", "init-inject", "pre-inject", "par-inject"]}
BASELINE = "merge, one run"  # what every ensemble is compared with


def main():
    parser = recipe.arguments(__doc__, RESULTS, FULL_RESULTS, None,
                              "the whole official split (6,000 train, 1,000 dev photos)")
    parser.add_argument("--ensembles", nargs="+", default=list(ENSEMBLES), choices=ENSEMBLES,
                        help="score only these; the others stored in --out are kept")
    args = recipe.parse(parser, tables)
    shared, default = SharedData(full=args.full), recipe.notebook_defaults()
    seeds = range(2 if args.quick else args.seeds)
    ensembles = {name: ENSEMBLES[name] for name in (["merge"] if args.quick else args.ensembles)}
    # What is stored (with today's settings) is read back: a run alone is not scored again.
    stored = recipe.stored_runs(args, defaults=default, seeds=args.seeds).get("runs", {})
    runs, members = dict(stored), {}  # members: each architecture's decoder and run, by seed
    dev_features = shared.split("val")[1]  # what the speed is measured on
    for architecture in dict.fromkeys(a for names in ensembles.values() for a in names):
        config = default | {"architecture": architecture} | ({"epochs": 3} if args.quick else {})
        name, members[architecture] = f"{architecture}, one run", []
        runs[name] = []
        for seed in seeds:
            with recipe.run_folder(args.runs, architecture, config, seed) as run_dir:
                model, vocab, seconds, curve = recipe.train_ours(shared, config, seed, run_dir)
            decoder = utils.CaptionDecoder(model, vocab)
            kept = recipe.read_back(stored.get(name, []), seed)
            if kept:
                runs[name].append(kept)
            else:
                recipe.record(runs[name], name, seed, seconds, len(curve),
                              recipe.score(decoder, shared, False, DECODINGS),
                              captions_per_second=speed(decoder, dev_features))
            members[architecture].append((decoder, runs[name][-1]))
    for name, architectures in ensembles.items():
        chosen = [member for a in architectures for member in members[a]]
        decoder = utils.Ensemble([d for d, _ in chosen])
        runs[name] = []
        recipe.record(runs[name], name, list(seeds), sum(r["train_seconds"] for _, r in chosen),
                      [r["epochs"] for _, r in chosen],
                      recipe.score(decoder, shared, False, DECODINGS),
                      members=len(chosen), captions_per_second=speed(decoder, dev_features))
    recipe.publish(args, make_report(shared, default, runs, args), runs)


def speed(decoder, features):
    """Captions a second of our default decoding over `features` (the dev images')."""
    return round(recipe.captions_per_second(decoder, features, utils.DEFAULT_DECODING), 1)


def make_report(shared, default, runs, args):
    """Each run alone (its seeds averaged) and each ensemble: scores per decoding, captions a
    second, and the paired difference from one merge run, per decoding."""
    names, _, raw = shared.split("val")
    different = recipe.differences(runs, dict(zip(names, raw)), DECODINGS, BASELINE)
    report = {name: recipe.summarise(group)
              | {"members": group[0].get("members", 1),
                 "captions_per_second": recipe.spread(
                     [r["captions_per_second"] for r in group]),
                 "difference_from_one_merge_run": {s.slug: different[s.slug].get(name)
                                                   for s in DECODINGS}}
              for name, group in runs.items()}
    seeds = 2 if args.quick else args.seeds
    return {"ensembles": report, "settings": {"defaults": default, "seeds": seeds},
            "data": {"features": f"{shared.path.name} ({shared.features.shape[1]}-d)",
                     "train_images": len(shared.prepared().names("train")),
                     "dev_images": len(names)},
            "seeds": seeds, "quick": args.quick}


def tables(report):
    """docs/results.md's table of a stored report: each run alone and each ensemble, its dev
    scores with our default decoding and greedily, the CIDEr-D difference from one merge run
    with its paired interval, and its speed."""
    ours, greedy = utils.DEFAULT_DECODING.slug, DECODINGS[0].slug
    header = ["decoded by", "models", "BLEU-4 / METEOR / CIDEr-D", "CIDEr-D minus one merge run's",
              "BLEU-4 minus one merge run's", "greedy BLEU-4 / CIDEr-D",
              "greedy CIDEr-D minus one merge run's", "captions a second (beam 5)"]
    lines = [recipe.markdown_row(header), recipe.markdown_row(["---"] * len(header))]
    for name, entry in report["ensembles"].items():
        difference = entry["difference_from_one_merge_run"]
        scores = [entry[ours][k]["mean"] for k in ("bleu4", "meteor", "cider_d")]
        lines.append(recipe.markdown_row([
            name + (f" (mean of {len(entry['seeds'])} seeds)" if entry["members"] == 1 else ""),
            str(entry["members"]), " / ".join(f"{x:.3f}" for x in scores),
            recipe.gain_cell((difference[ours] or {}).get("cider_d")),
            recipe.gain_cell((difference[ours] or {}).get("bleu4")),
            f"{entry[greedy]['bleu4']['mean']:.3f} / {entry[greedy]['cider_d']['mean']:.3f}",
            recipe.gain_cell((difference[greedy] or {}).get("cider_d")),
            f"{entry['captions_per_second']['mean']:.0f}"]))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
