"""Real captions of real photos: the run this repository ships, on photos it never saw,
shown honestly.

    .venv/bin/python benchmarks/real_captions.py [--quick] [--check]

Needs ../shared/flickr8k beside the checkout (the real Flickr8k files the benchmarks use).
Captions the first dev photos of Flickr8k's official split found in ../shared/flickr8k/Images
(by file name, none chosen by hand) with `models/flickr8k-pretrained` exactly as `make app` and
the run's three Python lines do (`utils.caption_image` on the photo, utils.DEFAULT_DECODING), and
quotes the run's own scores on the 1,000 dev photos (its `evaluation-val-*.json`, written by
notebook 05), so that the README says one thing of "the default model". Writes:

- outputs/real_captions.png: the photos with our caption and a reference (the photos are
  Flickr's, not ours to publish: never committed);
- the same captions as a table, with the scores and how they were made, between the README's
  `<!-- real captions -->` markers.

With --check, nothing is written: the README's table is compared with what the run writes here,
and any difference is listed (exit 1). With --quick, two photos and nothing written. Last line:
one JSON object with the captions and the scores.
"""
import argparse
import json
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import matplotlib

matplotlib.use("Agg")
from PIL import Image, ImageOps

import utils
from shared_data import REPO, shared_dir

SHOWN = 9  # dev photos in the figure and the table
SHIPPED = REPO / "models" / "flickr8k-pretrained"
BEAM_3 = utils.DecodingSetting(3, 1.0, 2)  # the papers' beam width, with our rules: quoted too


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two photos; nothing written")
    parser.add_argument("--check", action="store_true",
                        help="compare the README's table with what the run writes here")
    args = parser.parse_args()
    photos = utils.find_dataset_files(shared_dir())[0]
    dev = utils.read_split_file(shared_dir() / "Flickr_8k.devImages.txt")
    shown = sorted(name for name in dev if (photos / name).is_file())[:2 if args.quick else SHOWN]
    references = utils.read_captions(shared_dir() / "Flickr8k.token.txt").captions
    captioner = utils.Captioner.from_run(SHIPPED)
    captions, unreadable = utils.caption_image_files(captioner, [photos / n for n in shown])
    if unreadable:
        raise SystemExit(f"unreadable photos: {unreadable}")
    rows = [(name, captions[str(photos / name)].shown, " ".join(utils.tokenize(references[name][0])))
            for name in shown]
    evaluation = utils.read_evaluation(SHIPPED, "val")
    scores = {setting.slug: {k: round(v, 3) for k, v in evaluation.result(setting).scores.items()
                             if v is not None} for setting in (utils.DEFAULT_DECODING, BEAM_3)}
    report = {"run": SHIPPED.name, "dev_images": evaluation.images, "scores": scores,
              "decoding": utils.DEFAULT_DECODING.slug, "captions": rows, "quick": args.quick}
    if args.check:
        differ = [(name, ours, written) for (name, ours, _), written
                  in zip(rows, readme_captions(REPO / "README.md")) if ours != written]
        print(json.dumps(report | {"readme_differs": differ}))
        sys.exit(1 if differ else 0)
    if not args.quick:
        figure = utils.caption_grid([(ImageOps.fit(Image.open(photos / n), (320, 320)),
                                      [f"ours: {ours}", f"reference: {ref}"])
                                     for n, ours, ref in rows])
        (REPO / "outputs").mkdir(exist_ok=True)
        figure.savefig(REPO / "outputs" / "real_captions.png", dpi=100)
        write_table(REPO / "README.md", rows, scores, evaluation.images)
    print(json.dumps(report))


MARKER = "<!-- real captions -->"


def write_table(readme, rows, scores, n_images):
    """The captions as a Markdown table, with how they were made, between the README's two
    MARKER lines (which stay)."""
    ours, beam3 = scores[utils.DEFAULT_DECODING.slug], scores[BEAM_3.slug]
    lines = [
        f"Made by `.venv/bin/python benchmarks/real_captions.py` (it needs `../shared/flickr8k`): "
        f"[`models/flickr8k-pretrained`](models/flickr8k-pretrained/README.md) captions the "
        f"first {len(rows)} dev photos by file name found in the shared folder, none chosen by "
        f"hand, as `make app` does ({utils.DEFAULT_DECODING.label}). On all {n_images:,} dev "
        f"photos, by the COCO evaluation, it scores BLEU-4 {ours['bleu4']:.3f}, METEOR "
        f"{ours['meteor']:.3f}, CIDEr-D {ours['cider_d']:.3f}; with beam 3, as the papers decode "
        f"(and the same rules: {BEAM_3.label}), {beam3['bleu4']:.3f} / {beam3['meteor']:.3f} / "
        f"{beam3['cider_d']:.3f}. The dev split also chose this model and its settings, so these "
        "are not test figures. The photos are Flickr's, not ours to publish: the script draws "
        "them with their captions in `outputs/real_captions.png`. On another processor a caption may differ "
        "where two words score within float rounding; `--check` lists any difference.",
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


def readme_captions(readme):
    """The captions of the README's table, in its order."""
    table = readme.read_text(encoding="utf-8").split(MARKER)[1]
    return re.findall(r"^\| `[^`]+` \| (.*?) \| .*? \|$", table, re.MULTILINE)


if __name__ == "__main__":
    main()
