"""Stage 5: scoring captions the standard way, and the numbers that catch a broken model.

BLEU-1..4 are nltk's corpus BLEU (cumulative n-gram weights, all reference captions of an image,
no smoothing); CIDEr-D and METEOR are pycocoevalcap's, the COCO evaluation's own code. All read
captions tokenised by `captions.tokenize`, the same for references and model output.

`evaluate` is the one evaluation of notebook 05 and the quality benchmark: decode a split with
each decoding setting, score, diagnose, and decode it again with the images shuffled as a control.
Its results file, `evaluation-<split>.json` in the run folder, is read back by field.
"""
import dataclasses
import inspect
import shutil
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from nltk.translate.bleu_score import corpus_bleu
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from .captions import tokenize
from .decoding import decode
from .files import read_json, write_json

__all__ = ["BLEU_WEIGHTS", "coco_scores", "caption_scores", "caption_diagnostics", "evaluate", "find_result",
           "EVALUATION_FORMAT", "evaluation_path", "write_evaluation", "read_evaluation"]

EVALUATION_FORMAT = 1  # of evaluation-<split>.json

BLEU_WEIGHTS = {f"bleu{n}": tuple([1 / n] * n) for n in range(1, 5)}


# SPICE needs Stanford CoreNLP 3.6.0's jars beside pycocoevalcap's, which it downloads on first
# use (not possible offline): computed where they are present.
SPICE_JAR = (Path(inspect.getfile(PTBTokenizer)).parents[1] / "spice" / "lib" /
             "stanford-corenlp-3.6.0.jar")


def coco_scores(references, hypotheses):
    """The COCO caption evaluation, as the published tables compute it: its PTB tokenizer, then
    BLEU-1..4, METEOR, ROUGE-L and CIDEr-D (SPICE where its models are present).
    `references`: per image, the raw reference sentences; `hypotheses`: per image, one caption.
    The tokenizer and METEOR run on Java; without it, BLEU, ROUGE-L and CIDEr-D are computed on
    `tokenize` instead, and `missing` says so. Returns (scores, missing: {score: why})."""
    if len(references) != len(hypotheses) or not hypotheses:
        raise ValueError(f"{len(hypotheses)} captions for {len(references)} images")
    gts = {i: [{"caption": r} for r in refs] for i, refs in enumerate(references)}
    res = {i: [{"caption": h}] for i, h in enumerate(hypotheses)}
    missing = {}
    if shutil.which("java"):
        gts, res = PTBTokenizer().tokenize(gts), PTBTokenizer().tokenize(res)
    else:
        gts = {i: [" ".join(tokenize(c["caption"])) for c in v] for i, v in gts.items()}
        res = {i: [" ".join(tokenize(c["caption"])) for c in v] for i, v in res.items()}
        missing["ptb_tokenizer"] = missing["meteor"] = "no Java runtime (install one, e.g. " \
            "Debian's default-jre-headless): BLEU, ROUGE-L and CIDEr-D use utils.tokenize"
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"bleu{n}": float(b) for n, b in enumerate(bleu, 1)}
    scores["meteor"] = None if "meteor" in missing else float(Meteor().compute_score(gts, res)[0])
    scores["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    scores["cider_d"] = float(Cider().compute_score(gts, res)[0])
    scores["spice"] = None
    if SPICE_JAR.is_file() and "meteor" not in missing:
        from pycocoevalcap.spice.spice import Spice  # imported only where it can run
        scores["spice"] = float(Spice().compute_score(gts, res)[0])
    else:
        missing.setdefault("spice", f"Stanford CoreNLP 3.6.0 is not in {SPICE_JAR.parent} "
                                    "(pycocoevalcap downloads it on first use, with internet)")
    return scores, missing


def caption_scores(references, hypotheses, meteor=True, per_image=False):
    """Corpus BLEU-1..4, CIDEr-D and METEOR (None without Java, or with `meteor=False`: it takes
    about 10 s to start). `references`: per image, a list of reference captions, each a list of
    words; `hypotheses`: per image, one caption as words. With `per_image`, returns (scores,
    each image's CIDEr-D): the corpus's CIDEr-D is their mean (IDF from all references)."""
    if len(references) != len(hypotheses) or not hypotheses:
        raise ValueError(f"{len(hypotheses)} captions for {len(references)} images")
    with warnings.catch_warnings():  # nltk warns at every zero n-gram count; the score says it
        warnings.simplefilter("ignore", UserWarning)
        scores = {name: float(corpus_bleu(references, hypotheses, weights=weights))
                  for name, weights in BLEU_WEIGHTS.items()}
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(h)] for i, h in enumerate(hypotheses)}
    cider, each_cider = Cider().compute_score(gts, res)
    scores["cider_d"] = float(cider)
    # METEOR is pycocoevalcap's Java jar: computed where Java is installed, None elsewhere.
    use_meteor = meteor and shutil.which("java")
    scores["meteor"] = float(Meteor().compute_score(gts, res)[0]) if use_meteor else None
    return (scores, [float(x) for x in each_cider]) if per_image else scores


def caption_diagnostics(hypotheses, training_captions):
    """What a model that says the same thing for every image shows at once: how many distinct
    captions for how many images, the words used, the mean length and the share of captions
    copied word for word from the training set."""
    distinct = Counter(" ".join(h) for h in hypotheses)
    training = {" ".join(c) for c in training_captions}
    return {
        "images": len(hypotheses),
        "distinct_captions": len(distinct),
        "most_common_caption": distinct.most_common(1)[0][0] if distinct else "",
        "words_used": len({w for h in hypotheses for w in h}),
        "mean_length": sum(map(len, hypotheses)) / max(len(hypotheses), 1),
        "copied_from_training": sum(n for c, n in distinct.items() if c in training)
        / max(len(hypotheses), 1),
    }


def evaluate(decoder, names, features, references, settings, training_captions, control=None,
             meteor=True, verbose=True):
    """Caption the images `names` (their feature vectors `features`) with each DecodingSetting,
    score the captions against `references` (per image, a list of tokenised captions) and
    diagnose them against `training_captions`. With `control`, a setting, the images are also
    decoded with their feature vectors shuffled among them (seeded): a model that looks at the
    images must score well above that. Returns one entry per decoding, control last, each with
    every caption and every image's CIDEr-D."""
    jobs = [(setting, features, False) for setting in settings]
    if control is not None:
        shuffled = features[np.random.default_rng(0).permutation(len(features))]
        jobs.append((control, shuffled, True))
    results = []
    for setting, images, shuffled_images in jobs:
        started = time.perf_counter()
        hypotheses = [decoder.vocab.decode(ids).split() for ids in decode(decoder, images, setting)]
        if verbose:  # progress that stays in a saved notebook, as a widget would not
            print(f"decoded {len(images)} images, {setting.label}"
                  f"{' (shuffled images)' if shuffled_images else ''}, in "
                  f"{time.perf_counter() - started:.1f} s")
        scores, each_cider = caption_scores(references, hypotheses, meteor, per_image=True)
        results.append({
            "label": setting.label + (", shuffled images" if shuffled_images else ""),
            "decoding": dataclasses.asdict(setting), "shuffled_images": shuffled_images,
            "scores": scores, "diagnostics": caption_diagnostics(hypotheses, training_captions),
            "captions": dict(zip(names, map(" ".join, hypotheses))),
            "cider_d_per_image": dict(zip(names, each_cider))})
    return results


def find_result(results, setting, shuffled_images=False):
    """The entry of `results` (from `evaluate`) for one DecodingSetting."""
    wanted = dataclasses.asdict(setting)
    for entry in results:
        if entry["decoding"] == wanted and entry["shuffled_images"] == shuffled_images:
            return entry
    raise KeyError(f"no result for {setting.label}{', shuffled images' if shuffled_images else ''}")


def evaluation_path(run_dir, split):
    """Where notebook 05 keeps the evaluation of a split (a name, or a file of image names)."""
    return Path(run_dir) / f"evaluation-{Path(str(split)).stem}.json"


def write_evaluation(run_dir, split, results, images):
    write_json(evaluation_path(run_dir, split), {
        "format_version": EVALUATION_FORMAT, "run": str(run_dir), "split": str(split),
        "images": images, "results": results})


def read_evaluation(run_dir, split):
    """The evaluation of a split written by notebook 05, or None if there is none."""
    path = evaluation_path(run_dir, split)
    if not path.is_file():
        return None
    data = read_json(path)
    if data.get("format_version") != EVALUATION_FORMAT:
        raise ValueError(f"{path}: written by an older notebook 05; run notebook 05 again")
    return data
