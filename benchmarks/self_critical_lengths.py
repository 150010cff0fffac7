"""Why beam 5 gains nothing from self-critical training: the length of the captions it finds.

    python benchmarks/self_critical_lengths.py --runs DIR
    python benchmarks/self_critical_lengths.py --tables

The merge runs that `self_critical.py --full --runs DIR` keeps there, every seed it finished: the
first phase (`merge-seedN`) and the phase after it (`merge-self-critical-samples-seedN`, its best
dev epoch). Each is decoded on the 1,000 dev photos greedily and with beam 5 (no repeated 2-gram)
at each of LENGTH_PENALTIES, and scored by the COCO evaluation: BLEU-4, METEOR, CIDEr-D and the
captions' mean length, before and after the phase, with the paired intervals over the dev
photos (every seed averaged) of each decoding's gain over the same decoding before the phase
and over our default decoding before it. If the phase's beam captions lose because the search
finds short ones, a stronger length penalty gives their length and score back. Results in
benchmarks/results/self-critical-lengths.json (or `--out`). Last line: one JSON object.
"""
import os
from pathlib import Path

import utils

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
utils.hide_tensorflow_startup_lines()  # before an import below loads TensorFlow (utils/startup.py)
import our_recipe as recipe

from shared_data import SharedData

RESULTS = recipe.RESULTS_DIR / "self-critical-lengths.json"
LENGTH_PENALTIES = (0.0, 1.0, 2.0, 3.0)  # beam 5's: 0 sums log-probabilities, 1 (ours) per word
DECODINGS = [utils.DecodingSetting(1, 0.0, 2),
             *(utils.DecodingSetting(5, penalty, 2) for penalty in LENGTH_PENALTIES)]
PHASE = "merge-self-critical-samples-seed{}"  # self_critical.py's folder of a seed's phase


def phases(runs_dir):
    """The seeds whose phase self_critical.py finished in `runs_dir`, with its settings."""
    found = {}
    for seed in range(10):
        folder = runs_dir / PHASE.format(seed)
        if (folder / "self_critical.json").is_file():  # its history, written as it ends
            found[seed] = utils.read_json(folder / recipe.SETTINGS_FILE)
    return found


def decode_seed(shared, runs_dir, seed):
    """A seed's first-phase model and phase model, each scored with every DECODINGS setting."""
    first = recipe.notebook_defaults() | {"architecture": "merge"}  # as self_critical.py has it
    with recipe.run_folder(runs_dir, "merge", first, seed) as run_dir:
        model, vocab, _, _ = recipe.train_ours(shared, first, seed, run_dir)  # read back
    scored = {"before": recipe.score(utils.CaptionDecoder(model, vocab), shared, False, DECODINGS)}
    model.load_weights(runs_dir / PHASE.format(seed) / utils.WEIGHTS_FILE)
    scored["after"] = recipe.score(utils.CaptionDecoder(model, vocab), shared, False, DECODINGS)
    return scored


def make_report(runs, references, epochs):
    """The scores before and after the phase (mean over seeds), and the paired gain of each
    decoding after it over the same decoding before it and over our default decoding before it."""
    groups = {when: [{"seed": r["seed"], "train_seconds": 0, "epochs": 0, "scores": r[when]}
                     for r in runs] for when in ("before", "after")}
    different = recipe.differences(groups, references, DECODINGS, "before")
    ours = utils.DEFAULT_DECODING.slug  # each decoding after the phase against ours before it
    against_ours = {s.slug: recipe.differences(
        {"before": [g | {"scores": {s.slug: g["scores"][ours]}} for g in groups["before"]],
         "after": groups["after"]}, references, [s], "before")[s.slug]["after"]
        for s in DECODINGS}
    return {"models": {when: recipe.summarise(group) for when, group in groups.items()},
            "difference": {s.slug: different[s.slug].get("after") for s in DECODINGS},
            "difference_from_ours_before": against_ours,
            "settings": {"decodings": [s.slug for s in DECODINGS], "phase_epochs": epochs},
            "seeds": [r["seed"] for r in runs]}


def tables(report):
    """docs/results.md's table: per decoding, CIDEr-D and mean length before and after the phase,
    the paired gain, the gain over our default decoding before the phase, BLEU-4 and METEOR
    after."""
    header = ["decoding", "CIDEr-D before / after", "CIDEr-D gain (95% paired interval)",
              "CIDEr-D after minus our default decoding before", "BLEU-4 / METEOR after",
              "words a caption before / after"]
    lines = [recipe.markdown_row(header), recipe.markdown_row(["---"] * len(header))]
    before, after = report["models"]["before"], report["models"]["after"]
    for slug in report["settings"]["decodings"]:
        lines.append(recipe.markdown_row(
            [utils.DecodingSetting.from_slug(slug).label,
             f"{before[slug]['cider_d']['mean']:.3f} / {after[slug]['cider_d']['mean']:.3f}",
             recipe.gain_cell(report["difference"][slug]["cider_d"]),
             recipe.gain_cell(report["difference_from_ours_before"][slug]["cider_d"]),
             f"{after[slug]['bleu4']['mean']:.3f} / {after[slug]['meteor']['mean']:.3f}",
             f"{before[slug]['words_a_caption']['mean']:.1f} / "
             f"{after[slug]['words_a_caption']['mean']:.1f}"]))
    return "\n".join(lines)


def main():
    parser = recipe.arguments(__doc__, RESULTS, RESULTS, None, None)
    args = recipe.parse(parser, tables)
    if args.runs is None:
        parser.error("--runs is required: self_critical.py's run folders are read there")
    runs_dir, shared = Path(args.runs), SharedData(full=True)
    names, _, raw = shared.split("val")
    found = phases(runs_dir)
    if not found:
        parser.error(f"{runs_dir}: no finished phase of self_critical.py --runs there")
    epochs = sorted({config["self_critical_epochs"] for config in found.values()})
    runs = [{"seed": seed, **decode_seed(shared, runs_dir, seed)} for seed in found]
    recipe.publish(args, make_report(runs, dict(zip(names, raw)), epochs), runs)


if __name__ == "__main__":
    main()
