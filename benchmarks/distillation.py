"""Distillation: one model taught by an ensemble, against one run and against its teachers.

    python benchmarks/distillation.py --runs DIR [--quick] [--seeds N] [--levels LEVEL ...]
    python benchmarks/distillation.py --tables

On the whole official split (6,000 train, 1,000 dev photos, EfficientNet-Lite0's pooled
features, our defaults). The teachers are merge and par-inject, `--seeds` seeds each, as the
architectures and encoders benchmarks train them (the same folder names in `--runs`: a finished
one is read back; their weights are needed, so `--runs` is required but with `--quick`). The
students are merge runs of the same defaults and seeds, taught by all the teachers as one
ensemble (utils.distillation) at the word level (DISTILLATION_WEIGHT 0.5, notebook 04's
temperature and top k), the sequence level (the teachers' captions of the training photos as
one more reference each) or both (`--levels`); what the teachers say is computed once per
level and shared by that level's students. Every model is scored on the dev photos by the COCO
evaluation, greedy, with the papers' beam 3 and our default decoding; paired bootstrap
intervals over the dev photos against one merge run (the teachers' merge seeds), against the
teachers' ensemble and against the best single model (par-inject on Lite0 + Lite2, read from
encoders-full.json); training seconds (the teachers' work apart), captions a second. The goal
(issue 49): a student that keeps two thirds of the ensemble's CIDEr-D gain over one merge run,
at one model's speed. Results in benchmarks/results/distillation-full.json (or `--out`),
written after each run; a seed stored there (with today's settings) is read back. `--quick`:
two merge teachers and one student at both levels, 3 epochs each, no file. Last line: one JSON
object.
"""
import contextlib
import os
import tempfile
import time

import utils

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
utils.hide_tensorflow_startup_lines()  # before an import below loads TensorFlow (utils/startup.py)
import our_recipe as recipe
from architectures import mean_speed

from shared_data import REPO, SharedData, shared_dir

RESULTS = REPO / "benchmarks" / "results" / "distillation-full.json"
DECODINGS = [utils.DecodingSetting(1, 0.0, 0),   # greedy
             utils.DecodingSetting(3, 0.0, 0),   # beam 3, as the papers decode
             utils.DEFAULT_DECODING]             # ours
TEACHERS = ("merge", "par-inject")  # the six-run ensemble of docs/results.md, with the seeds
WEIGHT = 0.5  # the word level's share of each word's loss (notebook 04's default is 0: no teachers)
# What each level sets of notebook 04's distillation parameters.
LEVELS = {"word": {"distillation_weight": WEIGHT},
          "sequence": {"teacher_captions": True},
          "both": {"distillation_weight": WEIGHT, "teacher_captions": True}}
BASELINE, ENSEMBLE = "merge", "teachers' ensemble"  # the rows students are compared with
BEST_SINGLE = recipe.BEST_SINGLE[1]  # and the best single model, read back
# What each model's CIDEr-D is set against (paired): the key of the difference, and the row.
AGAINST = {"merge": BASELINE, "ensemble": ENSEMBLE, "best_single": BEST_SINGLE}


def save_record(run_dir, shared, config, vocab, data, seed):
    """A benchmark run folder's record and vocabulary, as notebook 04 writes them: the folder is
    then a run like any other (a teacher, notebook 05, the app)."""
    model_config, training = recipe.run_configs(config, vocab, data, seed)
    features = utils.feature_source(shared_dir() / "features" / shared.path.name,
                                    "efficientnet_lite0")
    record = utils.RunConfig("flickr8k_full", features, vocab.fingerprint,
                             {"source": "pypi", "dim": 50, "oov": "random"}, model_config,
                             training, data.counts())
    utils.save_run(run_dir, record, vocab)


def train_teachers(shared, default, architectures, seeds, runs_dir, results):
    """The teachers, trained (or read back) and scored: their folders, in order."""
    vocab, data = shared.captions(default["min_count"], default["drop_one_letter"])
    folders = []
    for architecture in architectures:
        config = default | {"architecture": architecture}
        runs = results.setdefault(architecture, [])
        for seed in seeds:
            with recipe.run_folder(runs_dir, f"{architecture}, Lite0", config, seed) as run_dir:
                model, _, seconds, curve = recipe.train_ours(shared, config, seed, run_dir)
                save_record(run_dir, shared, config, vocab, data, seed)
            folders.append(run_dir)
            if not recipe.read_back(runs, seed):
                decoder = utils.CaptionDecoder(model, vocab)
                recipe.record(runs, architecture, seed, seconds, len(curve),
                              recipe.score(decoder, shared, False, DECODINGS),
                              captions_per_second=speed(decoder, shared))
    return folders


def student_data(shared, default, teachers, level, runs_dir):
    """(CaptionData a student of `level` trains on, seconds the teachers took to say it): the
    references, with the teachers' captions and/or their words at each position; kept in
    `runs_dir`, shared by the level's seeds."""
    vocab, _ = shared.captions(default["min_count"], default["drop_one_letter"])
    started, prepared = time.perf_counter(), shared.prepared(default["drop_one_letter"])
    settings = LEVELS[level]
    if settings.get("teacher_captions"):
        prepared = prepared.with_captions(utils.teacher_captions(
            teachers, prepared, shared.names, shared.features,
            f"{runs_dir}/{utils.TEACHER_CAPTIONS_FILE}"))
    data = utils.CaptionData.encode(prepared, vocab, shared.names, shared.features)
    if settings.get("distillation_weight"):
        taught = "with-captions" if settings.get("teacher_captions") else "references"
        data = utils.with_teacher_targets(data, teachers, f"{runs_dir}/teacher-words-{taught}",
                                          default["distillation_temperature"],
                                          default["distillation_top_k"])
    return data, time.perf_counter() - started


def speed(decoder, shared):
    """Captions a second over the dev photos, greedy and with our default decoding."""
    return {s.slug: round(recipe.captions_per_second(decoder, shared.split("val")[1], s), 1)
            for s in (DECODINGS[0], utils.DEFAULT_DECODING)}


def make_report(results, references, teacher_seconds, args, default):
    """Every model's scores (mean and spread over seeds), its paired difference from each row of
    AGAINST there is, and its share of the teachers' ensemble's gain over one merge run."""
    paired = {key: recipe.differences(results, references, DECODINGS, row)
              for key, row in AGAINST.items() if row in results}
    entries = {}
    for name, runs in results.items():
        entries[name] = recipe.summarise(runs) | {
            "members": runs[0].get("members", 1), "captions_per_second": mean_speed(runs)} | {
            f"difference_from_{key}": {s.slug: pairs[s.slug].get(name) for s in DECODINGS}
            for key, pairs in paired.items()}
    ensemble = {s.slug: (entries.get(ENSEMBLE) or {}).get("difference_from_merge", {}).get(s.slug)
                for s in DECODINGS}
    for entry in entries.values():
        entry["share_of_ensemble_gain"] = {
            s.slug: round(mine["cider_d"]["gain"] / ensemble[s.slug]["cider_d"]["gain"], 3)
            for s in DECODINGS if (mine := entry["difference_from_merge"][s.slug])
            and ensemble[s.slug] and ensemble[s.slug]["cider_d"]["gain"] > 0}
    return {"models": entries, "teacher_seconds": teacher_seconds,
            "settings": {"defaults": default, "decodings": [s.slug for s in DECODINGS],
                         "levels": LEVELS},
            "seeds": 1 if args.quick else args.seeds, "quick": args.quick}


def main():
    parser = recipe.arguments(__doc__, RESULTS, RESULTS, None, None)
    parser.add_argument("--levels", nargs="+", choices=LEVELS, default=list(LEVELS),
                        help="train students at these levels only")
    args = recipe.parse(parser, tables)
    if args.runs is None and not args.quick:
        parser.error("--runs is required: the teachers' weights are kept there")
    default = recipe.notebook_defaults() | ({"epochs": 3} if args.quick else {})
    seeds = range(1 if args.quick else args.seeds)
    levels = ["both"] if args.quick else args.levels
    stored = recipe.stored_runs(args, defaults=default, decodings=[s.slug for s in DECODINGS],
                                levels=LEVELS)
    results, teacher_seconds = dict(stored.get("runs", {})), stored.get("teacher_seconds", {})
    elsewhere = {} if args.quick else recipe.read_elsewhere(
        {BEST_SINGLE: recipe.BEST_SINGLE}, default)
    shared = SharedData(full=True)
    names, _, raw = shared.split("val")
    references = dict(zip(names, raw))
    vocab, _ = shared.captions(default["min_count"], default["drop_one_letter"])

    def save():  # as the results grow: a long benchmark can be cut short
        if not args.quick:
            utils.write_json(args.out, make_report(results | elsewhere, references, teacher_seconds,
                                                   args, default) | {"runs": results})

    with (tempfile.TemporaryDirectory() if args.runs is None
          else contextlib.nullcontext(args.runs)) as runs_dir:
        teacher_seeds = range(2) if args.quick else seeds
        folders = train_teachers(shared, default, TEACHERS[:1] if args.quick else TEACHERS,
                                 teacher_seeds, runs_dir, results)
        teachers = utils.load_teachers(folders, vocab, utils.read_run(folders[0])[1].features,
                                       shared.features.shape[1:], f"{runs_dir}/students")
        if not results.get(ENSEMBLE):
            results[ENSEMBLE] = []
            recipe.record(results[ENSEMBLE], ENSEMBLE, list(teacher_seeds), 0, [],
                          recipe.score(teachers, shared, False, DECODINGS),
                          members=len(folders), captions_per_second=speed(teachers, shared))
        save()
        digests = [utils.weights_digest(folder) for folder in folders]
        # Seed by seed, each level in turn: a benchmark cut short has as many seeds of each.
        for seed in seeds:
            for level in levels:
                name = f"student, {level} level"
                runs = results.setdefault(name, [])
                config = default | {"architecture": "merge", "teachers": digests} | LEVELS[level]
                if recipe.read_back(runs, seed):
                    continue
                data, seconds = student_data(shared, default, teachers, level, runs_dir)
                teacher_seconds.setdefault(level, round(seconds, 1))  # the first visit's: all
                with recipe.run_folder(runs_dir, name, config, seed) as run_dir:
                    model, _, seconds, curve = recipe.train_ours(shared, config, seed, run_dir,
                                                                 data)
                    save_record(run_dir, shared, config, vocab, data, seed)
                decoder = utils.CaptionDecoder(model, vocab)
                recipe.record(runs, name, seed, seconds, len(curve),
                              recipe.score(decoder, shared, False, DECODINGS),
                              captions_per_second=speed(decoder, shared))
                save()
    recipe.publish(args, make_report(results | elsewhere, references, teacher_seconds, args,
                                     default), results)


def tables(report):
    """docs/results.md's table of a stored report: each model's dev scores with beam 3 and our
    default decoding, its CIDEr-D against one merge run and against the teachers' ensemble (our
    decoding), its share of the ensemble's gain, training time and captions a second."""
    ours, beam3 = utils.DEFAULT_DECODING.slug, DECODINGS[1].slug
    header = (["model", "runs", "beam 3: BLEU-4 / METEOR / CIDEr-D",
               "ours: BLEU-4 / METEOR / CIDEr-D", "CIDEr-D minus one merge run (ours)",
               "CIDEr-D minus the teachers' ensemble (ours)",
               "CIDEr-D minus par-inject on Lite0 + Lite2 (ours)", "share of the ensemble's gain",
               "training a run", "captions a second (ours)"])
    lines = [recipe.markdown_row(header), recipe.markdown_row(["---"] * len(header))]
    for name, entry in report["models"].items():
        seeds, alone = len(entry["seeds"]), entry["members"] == 1
        share = entry["share_of_ensemble_gain"].get(ours)
        lines.append(recipe.markdown_row(
            [name, f"{seeds} seed{'s' * (seeds > 1)}" if alone else f"{entry['members']} as one"]
            + [" / ".join(f"{entry[s][k]['mean']:.3f}" for k in ("bleu4", "meteor", "cider_d"))
               for s in (beam3, ours)]
            + [recipe.gain_cell((entry.get(f"difference_from_{key}", {}).get(ours) or {})
                                .get("cider_d")) for key in AGAINST]
            + ["" if share is None else f"{share:.0%}",
               f"{entry['train_seconds']['mean']:.0f} s" if alone else "-",
               f"{entry['captions_per_second'][ours]:.0f}"]))
    lines += ["", "The teachers' work, once per level: " + ", ".join(
        f"{level} {seconds:.0f} s" for level, seconds in report["teacher_seconds"].items())]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
