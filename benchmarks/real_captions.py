"""Real captions of real photos: our defaults trained on the shared Flickr8k subset, shown honestly.

    .venv/bin/python benchmarks/real_captions.py [--quick]

Needs ../shared/flickr8k beside the checkout (the real Flickr8k files the benchmarks use). Trains
the default model (utils.ModelConfig and utils.TrainingConfig defaults, GloVe 50d, vocabulary
threshold 5, as notebooks 01-04 do) on the 753 official train photos of the subset, from their
ImageNet features (EfficientNet-Lite0, ../shared/flickr8k/features), picks the epoch by dev loss,
and captions the 113 dev photos with utils.DEFAULT_DECODING. Writes:

- outputs/real_captions.png: the first dev photos with our caption and a reference (the photos are
  Flickr's, not ours to publish: this figure is never committed);
- the same captions as a table, with the scores of the whole dev split and how they were made,
  between the README's `<!-- real captions -->` markers.

The dev split also chose the defaults (benchmarks/quality.py): the scores are not a test figure.
With --quick, 3 epochs and nothing written. Last line: one JSON object with the dev scores.
"""
import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import matplotlib

matplotlib.use("Agg")
from PIL import Image, ImageOps

import utils
from shared_data import FEATURES, REPO, SharedData

SHOWN = 9  # dev photos in the figure and the table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs; nothing written")
    args = parser.parse_args()
    shared = SharedData()
    vocab, data = shared.captions()
    model_config = utils.ModelConfig(len(vocab), data.features.shape[1])
    training = utils.TrainingConfig(epochs=3) if args.quick else utils.TrainingConfig()
    model = utils.build_model(model_config, training, shared.embedding(vocab, training.seed),
                              data.feature_statistics())
    with tempfile.TemporaryDirectory() as run_dir:
        history = utils.train_caption_model(model, data, run_dir, training, verbose=0)
        model.load_weights(Path(run_dir) / utils.WEIGHTS_FILE)  # the best epoch's

    names, features, references = shared.split("val")
    training_captions = [c.split() for c in utils.split_captions(shared.prepared(), "train")]
    result, = utils.evaluate(utils.CaptionDecoder(model, vocab), names, features, references,
                             [utils.DEFAULT_DECODING], training_captions, meteor=False,
                             verbose=False)
    scores = {k: round(v, 3) for k, v in result.scores.items() if v is not None}
    rows = [(name, result.captions[name], " ".join(utils.tokenize(refs[0])))
            for name, refs in zip(names[:SHOWN], references)]
    if not args.quick:
        figure = utils.caption_grid([(ImageOps.fit(Image.open(shared.images_dir / n), (320, 320)),
                                      [f"ours: {ours}", f"reference: {ref}"])
                                     for n, ours, ref in rows])
        (REPO / "outputs").mkdir(exist_ok=True)
        figure.savefig(REPO / "outputs" / "real_captions.png", dpi=100)
        write_table(REPO / "README.md", rows, scores, len(names), len(history))
    print(json.dumps({"dev_images": len(names), "scores": scores, "epochs": len(history),
                      "decoding": result.decoding.slug, "examples": rows[:3], "quick": args.quick}))


MARKER = "<!-- real captions -->"


def write_table(readme, rows, scores, n_images, epochs):
    """The captions as a Markdown table, with how they were made, between the README's two
    MARKER lines (which stay)."""
    lines = [
        f"Made by `.venv/bin/python benchmarks/real_captions.py` (it needs `../shared/flickr8k`): "
        f"the defaults of notebooks 01-04 (GloVe 50d) trained on the 753 official train photos of "
        f"the shared Flickr8k subset, from their {FEATURES.stem} features ({epochs} epochs, the "
        f"best by dev loss), decoded with {utils.DEFAULT_DECODING.label}; the first {len(rows)} "
        f"of the {n_images} dev photos by file name, none chosen by hand. On all {n_images}, by "
        f"the COCO evaluation: BLEU-4 {scores['bleu4']:.3f}, CIDEr-D {scores['cider_d']:.3f}. "
        "The dev split also chose "
        "the defaults, so these are not test figures. The photos are Flickr's, not ours to "
        "publish: the script draws them with their captions in `outputs/real_captions.png`. "
        "Run elsewhere, a caption or the last digits may differ: float arithmetic differs from "
        "machine to machine.",
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
