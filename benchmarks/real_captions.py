"""Real captions of real photos: our defaults trained on the whole of Flickr8k's official
training split, shown honestly.

    .venv/bin/python benchmarks/real_captions.py [--quick] [--runs DIR]

Needs ../shared/flickr8k beside the checkout (the real Flickr8k files the benchmarks use). Trains
our defaults (the notebooks' `parameters` cells, as benchmarks/quality.py reads them: GloVe 50d,
vocabulary threshold 5) on the 6,000 official train photos, from the shared file of their ImageNet
features (EfficientNet-Lite0 on 224-px copies; a features-only dataset, as notebook 01's
`FEATURES` reads it), picks the epoch by dev loss, and captions the 1,000 dev photos with
utils.DEFAULT_DECODING. `--runs DIR` reads back the run benchmarks/quality.py --full kept there
under the same name ("default", seed 0) instead of training it again. Writes:

- outputs/real_captions.png: the first dev photos present in ../shared/flickr8k/Images with our
  caption and a reference (the photos are Flickr's, not ours to publish: never committed);
- the same captions as a table, with the scores of the whole dev split and how they were made,
  between the README's `<!-- real captions -->` markers.

The dev split also chose the defaults (benchmarks/quality.py --full): the scores are not a test
figure. With --quick, 3 epochs and nothing written. Last line: one JSON object with the dev scores.
"""
import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import matplotlib

matplotlib.use("Agg")
from our_recipe import notebook_defaults, run_folder, train_ours
from PIL import Image, ImageOps

import utils
from shared_data import REPO, SharedData, shared_dir

SHOWN = 9  # dev photos in the figure and the table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs; nothing written")
    parser.add_argument("--runs", help="a benchmarks/quality.py --full --runs folder to read the "
                                       "default run back from (trained there if missing)")
    args = parser.parse_args()
    shared = SharedData(full=True)
    config = notebook_defaults() | ({"epochs": 3} if args.quick else {})
    with run_folder(None if args.quick else args.runs, "default", config, 0) as run_dir:
        model, vocab, _, curve = train_ours(shared, config, 0, run_dir)

    names, features, references = shared.split("val")
    training_captions = [c.split() for c in utils.split_captions(shared.prepared(), "train")]
    result, = utils.evaluate(utils.CaptionDecoder(model, vocab), names, features, references,
                             [utils.DEFAULT_DECODING], training_captions, verbose=False)
    scores = {k: round(v, 3) for k, v in result.scores.items() if v is not None}
    photos = utils.find_dataset_files(shared_dir())[0]
    rows = [(name, result.captions[name], " ".join(utils.tokenize(refs[0])))
            for name, refs in zip(names, references) if (photos / name).is_file()][:SHOWN]
    if not args.quick:
        figure = utils.caption_grid([(ImageOps.fit(Image.open(photos / n), (320, 320)),
                                      [f"ours: {ours}", f"reference: {ref}"])
                                     for n, ours, ref in rows])
        (REPO / "outputs").mkdir(exist_ok=True)
        figure.savefig(REPO / "outputs" / "real_captions.png", dpi=100)
        write_table(REPO / "README.md", rows, scores, len(names), len(curve), shared)
    print(json.dumps({"dev_images": len(names), "scores": scores, "epochs": len(curve),
                      "decoding": result.decoding.slug, "examples": rows[:3], "quick": args.quick}))


MARKER = "<!-- real captions -->"


def write_table(readme, rows, scores, n_images, epochs, shared):
    """The captions as a Markdown table, with how they were made, between the README's two
    MARKER lines (which stay)."""
    lines = [
        f"Made by `.venv/bin/python benchmarks/real_captions.py` (it needs `../shared/flickr8k`): "
        f"the defaults of notebooks 01-04 (GloVe 50d) trained on the "
        f"{len(shared.prepared().names('train')):,} official train photos of Flickr8k, from "
        f"the shared file of their EfficientNet-Lite0 features ({shared.path.name}; {epochs} "
        f"epochs, the best by dev loss), decoded with {utils.DEFAULT_DECODING.label}; the first "
        f"{len(rows)} dev photos by file name among those whose photo is in the shared folder, "
        f"none chosen by hand. On all {n_images:,} dev photos, by the COCO evaluation: BLEU-4 "
        f"{scores['bleu4']:.3f}, METEOR {scores['meteor']:.3f}, CIDEr-D {scores['cider_d']:.3f}. "
        "The dev split also chose the defaults, so these are not test figures. The photos are "
        "Flickr's, not ours to publish: the script draws them with their captions in "
        "`outputs/real_captions.png`. Run elsewhere, a caption or the last digits may differ: "
        "float arithmetic differs from machine to machine.",
        "",
        "| photo | our caption | a reference caption |",
        "| --- | --- | --- |",
        *(f"| `{name}` | {ours} | {ref} |" for name, ours, ref in rows),
    ]
    before, _, rest = readme.read_text(encoding="utf-8").partition(MARKER + "\n")
    _, found, after = rest.partition(MARKER)
    if not found:
        raise ValueError(f"{readme}: no pair of {MARKER} lines to write the table between")
    with utils.atomic_path(readme) as tmp:
        tmp.write_text(before + MARKER + "\n" + "\n".join(lines) + "\n" + MARKER + after,
                       encoding="utf-8")


if __name__ == "__main__":
    main()
