"""Self-critical training's worth: dev scores before and after it, with paired intervals.

    python benchmarks/self_critical.py [--quick] [--full] [--seeds N] [--runs DIR]
                                       [--architectures NAME ...] [--epochs N] [--tune]
    python benchmarks/self_critical.py --full --tables

For each architecture (merge unless `--architectures` names others) and seed: the cross-entropy
run as architectures.py trains it (our defaults; with `--runs`, the very folder architectures.py
keeps, read back when it is finished), then `--epochs` epochs of the second phase
(utils.self_critical, the notebooks' other defaults) in a folder of its own, started from a copy
of the first phase's best weights. Both models are scored on the dev images by the COCO
evaluation, greedy, with beam 3 and with our default decoding; the second phase's gain is a
paired bootstrap interval over the dev images (every seed averaged), and captions ending on a
BAD_ENDINGS word are counted before and after; with `--full`, the greedy captions after the
phase are also set against the best single model's in our default decoding (par-inject on Lite0
+ Lite2, read from encoders-full.json). `--tune` also runs the phase with the greedy
caption's reward as the baseline (the first seed only). `--full`: the whole official split
(6,000 train, 1,000 dev photos, pooled features). Results in benchmarks/results/
self-critical.json (self-critical-full.json, or `--out`), written after each seed; a seed
already there (with today's settings) is read back, not trained again, so that `--seeds 3` on a
file of one seed trains seeds 1 and 2, on this machine or another, and the other
architectures' runs stay. `--quick`: 1 seed, 3 epochs, then 1, no file. Last line: one JSON
object.
"""
import os

import utils

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
utils.hide_tensorflow_startup_lines()  # before an import below loads TensorFlow (utils/startup.py)
import numpy as np
import our_recipe as recipe

from shared_data import REPO, SharedData

RESULTS = REPO / "benchmarks" / "results" / "self-critical.json"
FULL_RESULTS = REPO / "benchmarks" / "results" / "self-critical-full.json"
DECODINGS = [utils.DecodingSetting(1, 0.0, 0),   # greedy, as the phase selects its epoch
             utils.DecodingSetting(3, 0.0, 0),   # beam 3, as Tanti et al. decode
             utils.DEFAULT_DECODING]             # ours
EPOCHS = 10  # of the second phase, unless --epochs
CHECKPOINTS = (10, 20, 30)  # epochs within which the phase's best dev score is also reported


def phase(shared, config, seed, xe_model, runs_dir, name):
    """The second phase of one seed, in its own run folder (kept in `runs_dir`, resumed there):
    (its model at the best dev epoch, its history)."""
    vocab, data = shared.captions(config["min_count"], config["drop_one_letter"])
    _, training = recipe.run_configs(config, vocab, data, seed)
    with recipe.run_folder(runs_dir, name, config, seed) as run_dir:
        if not utils.self_critical_started(run_dir):  # it starts from the first phase's best
            xe_model.save_weights(f"{run_dir}/{utils.WEIGHTS_FILE}")
        train, dev = (utils.ImageReferences.of_split(*split, vocab)
                      for split in (data.train, data.val))
        history = utils.train_self_critical(xe_model, vocab, data.features, train, dev, run_dir,
                                            training)
        xe_model.load_weights(f"{run_dir}/{utils.WEIGHTS_FILE}")
    return xe_model, history


def best_within(runs, epochs):
    """The phase's best dev CIDEr-D (greedy, its own scorer) within each of CHECKPOINTS epochs
    (and all of them), mean over seeds, with the greedy captions' mean length at that epoch where
    the history has it: what a shorter phase would have kept."""
    runs = [r for r in runs if "history" in r]
    out = {}
    for last in sorted({n for n in CHECKPOINTS if n < epochs} | {epochs}) if runs else ():
        best = [max((e for e in r["history"] if e["epoch"] <= last), key=lambda e: e["dev_cider_d"])
                for r in runs]
        out[str(last)] = {"dev_cider_d": round(float(np.mean([e["dev_cider_d"] for e in best])), 4),
                          "epochs": [e["epoch"] for e in best]} | (
            {"dev_words": round(float(np.mean([e["dev_words"] for e in best])), 2)}
            if all("dev_words" in e for e in best) else {})
    return out


def bad_endings(scores):
    """Captions ending on a BAD_ENDINGS word, per decoding."""
    return {slug: utils.bad_endings(s["captions"].values()) for slug, s in scores.items()}


def tables(report):
    """docs/results.md's table of a stored report: per model and decoding, BLEU-4, METEOR and
    CIDEr-D before and after the phase (every seed averaged), the CIDEr-D gain with its paired
    interval, relative, the bad endings before and after (summed over seeds) and the captions'
    mean length in words; then the greedy captions after the phase against our default
    decoding's before it and the best single model's; then the dev references' mean length."""
    header = ["model", "decoding", "seeds", "BLEU-4 before / after", "METEOR before / after",
              "CIDEr-D before / after", "CIDEr-D gain (95% paired interval)", "relative",
              "bad endings before / after", "words a caption before / after"]
    lines = [recipe.markdown_row(header), recipe.markdown_row(["---"] * len(header))]
    for architecture, groups in report["self_critical"].items():
        before = groups["before"]
        for group, after in groups.items():
            if group == "before":
                continue
            name = architecture + ("" if group == "after, samples baseline" else f", {group}")
            lines += [_row(name, utils.DecodingSetting.from_slug(slug).label, after,
                           after["difference_from_before"][slug],
                           [f"{before['bad_endings'][slug]} / {after['bad_endings'][slug]}",
                            " / ".join(f"{g[slug]['words_a_caption']['mean']:.1f}"
                                       for g in (before, after))])
                      for slug in report["settings"]["decodings"]]
            lines.append(_row(architecture, "greedy after, against our default before", after,
                              after["greedy_against_default_before"], ["", ""]))
            if "greedy_against_best_single" in after:
                lines.append(_row(architecture, f"greedy after, against {recipe.BEST_SINGLE[1]} (ours)",
                                  after, after["greedy_against_best_single"], ["", ""]))
    for architecture, groups in report["self_critical"].items():
        for group, after in groups.items():
            within = after.get("best_dev_cider_d_within")
            if within:
                lines += ["", f"{architecture}, {group}: the best dev CIDEr-D of greedy captions "
                          "(the phase's own scorer, mean of the seeds) within " + "; ".join(
                              f"{n} epochs {w['dev_cider_d']:.3f} (epochs {w['epochs']}"
                              + (f", {w['dev_words']:.1f} words)" if "dev_words" in w else ")")
                              for n, w in within.items())]
    words = report["data"].get("reference_words_a_caption")
    if words:
        lines += ["", f"The dev references: {words:.1f} words a caption."]
    return "\n".join(lines)


def _row(name, decoding, after, difference, counts):
    """One row of `tables`: a paired difference's scores before / after, gain and relative,
    then `counts` (bad endings, words) as they are."""
    cider = difference["cider_d"]
    return recipe.markdown_row(
        [name, decoding, str(len(after["seeds"]))]
        + [f"{difference[k]['first']:.3f} / {difference[k]['second']:.3f}"
           for k in ("bleu4", "meteor", "cider_d")]
        + [recipe.gain_cell(cider), f"{cider['gain'] / cider['first']:+.0%}", *counts])


def main():
    parser = recipe.arguments(__doc__, RESULTS, FULL_RESULTS,
                              "also the greedy baseline (first seed only)",
                              "the whole official split (6,000 train, 1,000 dev photos)")
    parser.add_argument("--architectures", nargs="+", default=["merge"],
                        choices=utils.ARCHITECTURES)
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="of the second phase")
    parser.add_argument("--start", help="instead of the architectures: the finished first-phase "
                                        "runs kept in --runs under this name (say 'student, both "
                                        "level', distillation.py's), their settings read there")
    args = recipe.parse(parser, tables)
    if args.start and not args.runs:
        parser.error("--start reads its runs in --runs")
    seeds = range(1 if args.quick else args.seeds)
    shared, default = SharedData(full=args.full), recipe.notebook_defaults()
    settings = {"first_phase": default, "epochs": 1 if args.quick else args.epochs,
                "decodings": [s.slug for s in DECODINGS]} | ({"start": args.start} if args.start
                                                            else {})
    # A seed stored so far (with today's settings) is read back, not trained again.
    stored = recipe.stored_runs(args, **settings).get("runs", {})
    runs = dict(stored)  # each architecture's, in turn, replaced by its seeds read back or run
    baselines = list(utils.Baseline) if args.tune else [utils.Baseline.SAMPLES]
    for architecture in [args.start] if args.start else args.architectures:
        first = default | {"architecture": architecture} | ({"epochs": 3} if args.quick else {})
        runs[architecture] = groups = {
            "before": [], **{f"after, {b} baseline": [] for b in baselines}}
        for seed in seeds:
            kept = {group: recipe.read_back(stored.get(architecture, {}).get(group, []), seed)
                    for group in groups}
            wanted = [f"after, {b} baseline" for b in (baselines if seed == 0 else baselines[:1])]
            if kept["before"] and all(kept[group] for group in wanted):
                for group in ("before", *wanted):
                    groups[group].append(kept[group])
                continue
            if args.start:  # the kept run's own settings: a student's teachers and levels
                first = utils.read_json(recipe.kept_folder(args.runs, architecture, seed)
                                        / recipe.SETTINGS_FILE)
            with recipe.run_folder(args.runs, architecture, first, seed) as run_dir:
                model, vocab, seconds, curve = recipe.train_ours(shared, first, seed, run_dir)
            scores = recipe.score(utils.CaptionDecoder(model, vocab), shared, False, DECODINGS)
            recipe.record(groups["before"], f"{architecture}, cross-entropy", seed, seconds,
                          len(curve), scores, bad_endings=bad_endings(scores))
            weights = model.get_weights()
            for group, baseline in zip(wanted, baselines):
                model.set_weights(weights)
                config = first | {"self_critical_epochs": settings["epochs"],
                                  "self_critical_baseline": baseline}
                tuned, history = phase(shared, config, seed, model,
                                       args.runs, f"{architecture}, self-critical, {baseline}")
                scores = recipe.score(utils.CaptionDecoder(tuned, vocab), shared, False,
                                      DECODINGS)
                recipe.record(groups[group], f"{architecture}, {group}", seed,
                              sum(row.get("seconds", 0) for row in history), len(history) - 1,
                              scores, bad_endings=bad_endings(scores), history=history)
            if not args.quick:  # kept as it grows: a long benchmark can be cut short
                utils.write_json(args.out, make_report(shared, settings, runs, args) | {"runs": runs})
    recipe.publish(args, make_report(shared, settings, runs, args), runs)


def greedy_against(baseline, runs, references):
    """The greedy captions of `runs` against `baseline`'s runs in our default decoding: their
    paired difference (every seed of each averaged)."""
    greedy, ours = DECODINGS[0].slug, utils.DEFAULT_DECODING.slug
    as_greedy = [{"scores": {greedy: r["scores"][ours]}} for r in baseline]
    return recipe.differences({"baseline": as_greedy, "runs": runs}, references, DECODINGS[:1],
                              "baseline")[greedy]["runs"]


def make_report(shared, settings, runs, args):
    """The benchmark's report on the `runs` so far, by architecture and group: each group's scores
    over its seeds, bad endings, the phase's best epochs and seconds an epoch, each phase's
    paired difference from the cross-entropy runs of its own seeds, per decoding, and its greedy
    captions' from those runs' captions in our default decoding (and, on the whole split, from
    recipe.BEST_SINGLE's)."""
    names, _, raw = shared.split("val")
    references = dict(zip(names, raw))
    best = (recipe.read_elsewhere({"best": recipe.BEST_SINGLE}, settings["first_phase"]).get("best")
            if args.full and not args.quick else None)  # its runs decoded the whole split's dev
    report = {}
    for architecture, groups in runs.items():
        groups = {k: v for k, v in groups.items() if v}
        paired = {group: [r for r in groups["before"] if recipe.read_back(group_runs, r["seed"])]
                  for group, group_runs in groups.items() if group != "before"}
        different = {group: recipe.differences({"before": paired[group], group: groups[group]},
                                               references, DECODINGS, "before")
                     for group in paired}
        # What the phase is for, decoding greedily, against the first phase's best (and the best
        # single model) in our default decoding.
        against_default = {group: greedy_against(paired[group], groups[group], references)
                           for group in paired}
        against_best = {group: greedy_against(best, groups[group], references)
                        for group in paired} if best else {}
        report[architecture] = {
            group: {**recipe.summarise(group_runs),
                    "bad_endings": {s.slug: int(np.sum([r["bad_endings"][s.slug]
                                                        for r in group_runs]))
                                    for s in DECODINGS},
                    "best_epochs": [int(max(r["history"], key=lambda e: e["dev_cider_d"])["epoch"])
                                    for r in group_runs if "history" in r],
                    "best_dev_cider_d_within": best_within(group_runs, settings["epochs"]),
                    "seconds_per_epoch": round(float(np.mean(
                        [e["seconds"] for r in group_runs for e in r["history"][1:]])), 1)
                    if group != "before" else None,
                    "difference_from_before": {slug: d[group] for slug, d in
                                               different.get(group, {}).items() if group in d}}
            | ({"greedy_against_default_before": against_default[group]}
               if group in against_default else {})
            | ({"greedy_against_best_single": against_best[group]} if group in against_best else {})
            for group, group_runs in groups.items()}
    return {"self_critical": report, "settings": settings,
            "data": {"features": f"{shared.path.name} ({shared.features.shape[1]}-d)",
                     "train_images": len(shared.prepared().names("train")),
                     "dev_images": len(names),
                     "reference_words_a_caption": round(recipe.mean_words(
                         " ".join(tokens) for n in names
                         for tokens in shared.prepared().images[n]["references"]), 2)},
            "seeds": 1 if args.quick else args.seeds, "quick": args.quick}


if __name__ == "__main__":
    main()
