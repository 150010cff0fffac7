"""Which encoder: EfficientNet-Lite0, Lite2, or both side by side, on the whole split.

    python benchmarks/encoders.py [--quick] [--seeds N] [--runs DIR] [--architectures NAME ...]
                                  [--features NAME ...]
    python benchmarks/encoders.py --tables

Each of ARCHITECTURES trains with our defaults (the notebooks' `parameters` cells) on the whole
official split (6,000 train, 1,000 dev photos) from the pooled features of each of FEATURES:
Lite0's 1,280 values an image, Lite2's 1,280 (the same photos' 224-px copies squashed to 260 px),
and the two concatenated (2,560). Seeds 0 to N-1; each run picks its epoch by validation loss, is
scored on the dev photos by the COCO evaluation greedily, with beam 3 (the papers') and with our
default decoding, and is compared with merge on Lite0 by a paired bootstrap interval over the dev
photos (every seed averaged). The runs on Lite0 are the architectures benchmark's
(architectures-full.json, the same defaults and seeds), trained here only where an ensemble needs
one's weights, and merge's and par-inject's six runs as one are the ensemble benchmark's
(ensemble-full.json): ELSEWHERE. ENSEMBLES then decode merge runs as one (utils.Ensemble, each member
reading its own encoder's features): seeds of one encoder against members that read different
encoders. Every model is compared with one merge run on Lite0, and each of AGAINST with the models
that differ from it in one thing (the encoder, the architecture, the members' encoders), the
best single model also with the six-run ensemble. Beside
the scores: each run's training seconds, and each encoder's extraction speed on this machine
(images a second through the network, batches of 32, the best of three).

Results in benchmarks/results/encoders-full.json (`--out`), written after each run; a run stored
there (with today's settings) is read back, not trained again. The ensembles need the members'
weights: give `--runs DIR` to keep each run's folder (a finished one is read back, an interrupted
one resumes); without it only the runs trained by this call can join one. `--features` trains on
those inputs only (the others' stored runs stay, and their kept folders still join ensembles).
A call that trains nothing (all stored) scores the report again and keeps the stored extraction
speeds. `--quick`: merge on Lite0 and Lite2, one seed of at most 3 epochs, their ensemble, nothing
written. Last line: one JSON object.
"""
import os

import utils

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
utils.hide_tensorflow_startup_lines()  # before an import below loads TensorFlow (utils/startup.py)
import our_recipe as recipe
from architectures import DECODINGS, PUBLISHED, mean_speed

from shared_data import SharedData

RESULTS = recipe.RESULTS_DIR / "encoders-full.json"
# What each input is: the encoders whose pooled features it lays side by side.
FEATURES = {"Lite0": ("efficientnet_lite0",), "Lite2": ("efficientnet_lite2",),
            "Lite0 + Lite2": ("efficientnet_lite0", "efficientnet_lite2")}
ARCHITECTURES = ("merge", "par-inject")  # merge, and the inject that tied with it on dev
BASELINE = "merge, Lite0"  # what every run and ensemble is compared with
SIX_RUNS = "merge and par-inject, Lite0, six as one"  # the best ensemble: issue 49's goal
# Rows of the other whole-split benchmarks on Lite0, read back where they were made with today's
# defaults (not trained again, but where an ensemble needs a run's weights): our name, (their
# results file, their name).
ELSEWHERE = {"merge, Lite0": ("architectures-full.json", "merge"),
             "par-inject, Lite0": ("architectures-full.json", "par-inject"),
             SIX_RUNS: ("ensemble-full.json", "merge and par-inject")}
# Ensembles of merge runs: each member (features, seed). Two and three members of one encoder's
# seeds, and as many members that see the photo through different encoders.
# (Lite0's three seeds as one ensemble: benchmarks/ensemble.py.)
ENSEMBLES = {"Lite2, seeds 0 and 1": [("Lite2", 0), ("Lite2", 1)],
             "Lite0 seed 0 and Lite2 seed 1": [("Lite0", 0), ("Lite2", 1)],
             "Lite2, three seeds": [("Lite2", 0), ("Lite2", 1), ("Lite2", 2)],
             "Lite0 seed 0, Lite2 seed 1 and both seed 0": [("Lite0", 0), ("Lite2", 1),
                                                            ("Lite0 + Lite2", 0)]}
# Paired comparisons beside BASELINE: each model minus those that differ from it in one thing
# (its encoder, its architecture; an ensemble across encoders: the seeds of one, as many members);
# the best single model also against the six runs as one (how much of their gain it keeps).
AGAINST = {"par-inject, Lite2": ("par-inject, Lite0", "merge, Lite2"),
           "merge, Lite0 + Lite2": ("merge, Lite2",),
           "par-inject, Lite0 + Lite2": ("par-inject, Lite2", "merge, Lite0 + Lite2", SIX_RUNS),
           "Lite0 seed 0 and Lite2 seed 1": ("Lite2, seeds 0 and 1",),
           "Lite0 seed 0, Lite2 seed 1 and both seed 0": ("Lite2, three seeds",)}
SPEED_BATCH = 32  # images a batch when extraction speed is timed (notebook 02's on a CPU)


def extraction_speed(encoder_name):
    """Images a second through an encoder's network on this machine (ImageNet weights, pooled),
    the best of three timed batches."""
    encoder = utils.Encoder(encoder_name)
    cnn = encoder.build()
    return round(max(utils.encoder_speed(cnn, encoder, SPEED_BATCH) for _ in range(3)), 1)


def extraction(names):
    """Each encoder's extraction speed, and the machine it was measured on."""
    return {"machine": recipe.machine(),
            "images_per_second": {name: extraction_speed(name) for name in names}}


def ensemble_input(members):
    """(the tables an ensemble's input lays side by side, each member's table index): one table
    per distinct features, in the members' order."""
    tables = list(dict.fromkeys(features for features, _ in members))
    return tables, [tables.index(features) for features, _ in members]


def make_report(results, references, speeds, args, default):
    """Every run and ensemble: scores per decoding (mean and spread over seeds), training time,
    the paired difference from merge on Lite0, and each model of AGAINST minus those it is set
    against."""
    results = {name: runs for name, runs in results.items() if runs}  # none yet: no entry
    different = recipe.differences(results, references, DECODINGS, BASELINE)
    against = {name: {other: recipe.differences({other: results[other], name: results[name]},
                                                references, DECODINGS, other)
                      for other in others if other in results}
               for name, others in AGAINST.items() if name in results}
    entries = {name: recipe.summarise(runs)
               | {"members": runs[0].get("members", 1),
                  "captions_per_second": mean_speed(runs),
                  "difference_from_merge_lite0": {s.slug: different[s.slug].get(name)
                                                  for s in DECODINGS}}
               | ({"difference_from": {other: {s.slug: pair[s.slug].get(name) for s in DECODINGS}
                                       for other, pair in against[name].items()}}
                  if against.get(name) else {})
               for name, runs in results.items()}
    return {"models": entries, "extraction": speeds,
            "settings": {"defaults": default, "decodings": [s.slug for s in DECODINGS],
                         "features": {k: list(v) for k, v in FEATURES.items()}},
            "missing": different[DECODINGS[0].slug]["missing"],
            "seeds": 1 if args.quick else args.seeds, "quick": args.quick}


def main():
    parser = recipe.arguments(__doc__, RESULTS, RESULTS, None, None)
    parser.add_argument("--architectures", nargs="+", choices=ARCHITECTURES,
                        default=list(ARCHITECTURES), help="train only these")
    parser.add_argument("--features", nargs="+", choices=FEATURES, default=list(FEATURES),
                        help="train only on these inputs; the others' stored runs are kept")
    args = recipe.parse(parser, tables)
    default = recipe.notebook_defaults() | ({"epochs": 3} if args.quick else {})
    seeds = range(1 if args.quick else args.seeds)
    features = {k: v for k, v in FEATURES.items() if not args.quick or k != "Lite0 + Lite2"}
    architectures = ["merge"] if args.quick else args.architectures
    ensembles = ({"Lite0 seed 0 and Lite2 seed 0": [("Lite0", 0), ("Lite2", 0)]} if args.quick
                 else ENSEMBLES)
    stored = recipe.stored_runs(args, defaults=default, decodings=[s.slug for s in DECODINGS])
    results = dict(stored.get("runs", {}))
    for name, runs in ({} if args.quick else recipe.read_elsewhere(ELSEWHERE, default)).items():
        results.setdefault(name, runs)
    speeds = stored.get("extraction")  # measured again at the end
    data = {name: SharedData(full=True, encoders=encoders) for name, encoders in features.items()}
    names, _, raw = data["Lite0"].split("val")
    references = dict(zip(names, raw))
    members = {}  # (features, seed) of merge: (its decoder, its record), its weights at hand
    needed = {member for chosen in ensembles.values() for member in chosen}
    trained = False  # by this call: a call that trains nothing keeps the stored speeds

    def save():  # as the results grow: a long benchmark can be cut short
        if not args.quick:
            utils.write_json(args.out, make_report(results, references, speeds, args, default)
                             | {"runs": results})

    # Seed by seed, each input in turn: a benchmark cut short has as many seeds of each.
    for seed in seeds:
        for architecture in architectures:
            config = default | {"architecture": architecture}
            for feature_name, shared in data.items():
                name = f"{architecture}, {feature_name}"
                runs = results.setdefault(name, [])
                kept = recipe.read_back(runs, seed)
                wanted = architecture == "merge" and (feature_name, seed) in needed
                if feature_name not in args.features and not (kept and args.runs and wanted):
                    continue  # not trained by this call (an ensemble may read its folder back)
                if kept and not (args.runs and wanted):
                    continue  # stored, and its weights not wanted (or not kept)
                with recipe.run_folder(args.runs, name, config, seed) as run_dir:
                    model, vocab, seconds, curve = recipe.train_ours(shared, config, seed, run_dir)
                trained = True
                decoder = utils.CaptionDecoder(model, vocab)
                if kept and len(curve) != kept["epochs"]:  # another run than the stored one
                    name = f"{name}, trained again"  # (for its weights): scored on its own
                    runs = results.setdefault(name, [])
                    kept = recipe.read_back(runs, seed)
                if not kept:
                    recipe.record(runs, name, seed, seconds, len(curve),
                                  recipe.score(decoder, shared, False, DECODINGS), curve=curve,
                                  captions_per_second=speed(decoder, shared))
                    save()
                if architecture == "merge":
                    members[feature_name, seed] = decoder, recipe.read_back(runs, seed)
    for name, chosen in ensembles.items():
        if not all(member in members for member in chosen):
            continue  # a member's weights are not at hand (not trained, no --runs)
        inputs, reads = ensemble_input(chosen)
        shared = SharedData(full=True, encoders=sum((FEATURES[i] for i in inputs), ()))
        decoder = utils.Ensemble([members[m][0] for m in chosen], reads)
        alone = [members[m][1] for m in chosen]
        results[name] = []
        recipe.record(results[name], name, [s for _, s in chosen],
                      sum(r["train_seconds"] for r in alone), [r["epochs"] for r in alone],
                      recipe.score(decoder, shared, False, DECODINGS), members=len(chosen),
                      captions_per_second=speed(decoder, shared))
        save()
    # Timed last, after the trainings: what else shares the machine then is up to whoever runs it.
    if trained or not speeds:
        speeds = extraction(("efficientnet_lite0", "efficientnet_lite2"))
    recipe.publish(args, make_report(results, references, speeds, args, default), results)


def speed(decoder, shared):
    """Captions a second over the dev photos, greedy and with our default decoding, by slug (as
    the architectures benchmark stores them)."""
    return {s.slug: round(recipe.captions_per_second(decoder, shared.split("val")[1], s), 1)
            for s in (DECODINGS[0], utils.DEFAULT_DECODING)}


def tables(report):
    """docs/results.md's tables of a stored report: each model's dev scores with the papers'
    beam 3 and our default decoding, CIDEr-D against merge on Lite0, training time (an ensemble:
    its speed); the paired comparisons of AGAINST; the extraction speeds."""
    names = {"bleu4": "BLEU-4", "meteor": "METEOR", "cider_d": "CIDEr-D"}
    header = (["model", "runs", "epochs"]
              + [f"{label}: BLEU-4 / METEOR / CIDEr-D" for label in ("beam 3", "ours")]
              + [f"{label}: CIDEr-D minus one merge run on Lite0's" for label in
                 ("beam 3", "ours")]
              + ["training a run, or captions a second (ours)", "published (beam 3)"])
    lines = [recipe.markdown_row(header), recipe.markdown_row(["---"] * len(header))]
    slugs = (DECODINGS[1].slug, utils.DEFAULT_DECODING.slug)
    for name, entry in report["models"].items():
        difference, alone = entry["difference_from_merge_lite0"], entry["members"] == 1
        seeds = len(entry["seeds"])
        lines.append(recipe.markdown_row(
            [name, f"{seeds} seed{'s' * (seeds > 1)}" if alone else f"{entry['members']} as one",
             ", ".join(map(str, entry["epochs"])) if alone else "-"]
            + [" / ".join(f"{entry[s][k]['mean']:.3f}" for k in names) if s in entry else "-"
               for s in slugs]
            + [recipe.gain_cell((difference[s] or {}).get("cider_d")) for s in slugs]
            + [f"{entry['train_seconds']['mean']:.0f} s" if alone else
               f"{entry['captions_per_second'][utils.DEFAULT_DECODING.slug]:.0f} captions/s",
               PUBLISHED.get(name.split(",")[0], "-") if name.endswith("Lite0") else "-"]))
    header = ["model", "minus", "decoding", "CIDEr-D difference", "BLEU-4 difference"]
    lines += ["", recipe.markdown_row(header), recipe.markdown_row(["---"] * len(header))]
    for name, entry in report["models"].items():
        lines += [recipe.markdown_row(
            [name, other, utils.DecodingSetting.from_slug(s).label]
            + [recipe.gain_cell(pair[s][k]) for k in ("cider_d", "bleu4")])
            for other, pair in entry.get("difference_from", {}).items() for s in slugs
            if pair[s]]
    speeds = report.get("extraction") or {"machine": {}, "images_per_second": {}}
    machine = speeds["machine"]
    header = ["encoder", f"images a second (batches of 32; {machine.get('cpu')}, "
                         f"{machine.get('cores')} cores)"]
    lines += ["", recipe.markdown_row(header), recipe.markdown_row(["---"] * len(header))]
    lines += [recipe.markdown_row([name, f"{rate:.1f}"])
              for name, rate in speeds["images_per_second"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
