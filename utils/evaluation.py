"""Stage 5: scoring captions as the papers do, and the numbers that catch a broken model.

The headline is the COCO caption evaluation's own code (pycocoevalcap), as every published table
computes it: its PTB tokenizer on the raw sentences, then BLEU-1..4, METEOR, ROUGE-L and CIDEr-D
(SPICE where its models are present). nltk's corpus BLEU on `captions.tokenize` stands beside it,
labelled `nltk_bleu1`..`nltk_bleu4`: it is what most tutorials report, and it differs.

`evaluate` is the one evaluation of notebook 05 and the quality benchmark: decode a split with
each decoding setting, score, diagnose, and decode it again with the images shuffled as a control.
Its results file, named after the split and the decodings, is read back by field.
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
from .decoding import DecodingSetting, decode
from .files import read_json, write_json

__all__ = ["BLEU_WEIGHTS", "nltk_bleu", "coco_scores", "caption_scores", "caption_diagnostics",
           "evaluate", "find_result", "EVALUATION_FORMAT", "evaluation_path", "write_evaluation",
           "read_evaluation"]

EVALUATION_FORMAT = 2  # of evaluation-<split>-<decodings>.json

BLEU_WEIGHTS = {f"bleu{n}": tuple([1 / n] * n) for n in range(1, 5)}


# SPICE needs Stanford CoreNLP 3.6.0's jars beside pycocoevalcap's, which it downloads on first
# use (not possible offline): computed where they are present.
SPICE_JAR = (Path(inspect.getfile(PTBTokenizer)).parents[1] / "spice" / "lib" /
             "stanford-corenlp-3.6.0.jar")


def coco_scores(references, hypotheses, meteor=True, per_image=False):
    """The COCO caption evaluation, as the published tables compute it: its PTB tokenizer, then
    BLEU-1..4, METEOR, ROUGE-L and CIDEr-D (SPICE where its models are present).
    `references`: per image, the raw reference sentences; `hypotheses`: per image, one caption.
    The tokenizer and METEOR run on Java; without it, BLEU, ROUGE-L and CIDEr-D are computed on
    `tokenize` instead, and `missing` says so. `meteor=False` leaves METEOR out (its Java takes
    about 10 s to start). Returns (scores, missing: {score: why}), and with `per_image` each
    image's CIDEr-D too (the corpus's is their mean)."""
    if len(references) != len(hypotheses) or not hypotheses:
        raise ValueError(f"{len(hypotheses)} captions for {len(references)} images")
    gts = {i: [{"caption": r} for r in refs] for i, refs in enumerate(references)}
    res = {i: [{"caption": h}] for i, h in enumerate(hypotheses)}
    missing = {}
    if shutil.which("java"):  # one start of the Java tokenizer for references and captions
        tokens = PTBTokenizer().tokenize({**{("ref", i): v for i, v in gts.items()},
                                          **{("hyp", i): v for i, v in res.items()}})
        gts, res = ({i: tokens[kind, i] for i in d} for kind, d in (("ref", gts), ("hyp", res)))
    else:
        gts = {i: [" ".join(tokenize(c["caption"])) for c in v] for i, v in gts.items()}
        res = {i: [" ".join(tokenize(c["caption"])) for c in v] for i, v in res.items()}
        missing["ptb_tokenizer"] = missing["meteor"] = "no Java runtime (install one, e.g. " \
            "Debian's default-jre-headless): BLEU, ROUGE-L and CIDEr-D use utils.tokenize"
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"bleu{n}": float(b) for n, b in enumerate(bleu, 1)}
    if not meteor:
        missing.setdefault("meteor", "left out (meteor=False)")
    scores["meteor"] = None if "meteor" in missing else float(Meteor().compute_score(gts, res)[0])
    scores["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    cider, each_cider = Cider().compute_score(gts, res)
    scores["cider_d"] = float(cider)
    scores["spice"] = None
    if SPICE_JAR.is_file() and "meteor" not in missing:
        from pycocoevalcap.spice.spice import Spice  # imported only where it can run
        scores["spice"] = float(Spice().compute_score(gts, res)[0])
    else:
        missing.setdefault("spice", f"Stanford CoreNLP 3.6.0 is not in {SPICE_JAR.parent} "
                                    "(pycocoevalcap downloads it on first use, with internet)")
    return (scores, missing, [float(x) for x in each_cider]) if per_image else (scores, missing)


def nltk_bleu(references, hypotheses):
    """nltk's corpus BLEU-1..4 (cumulative n-gram weights, all references, no smoothing).
    `references`: per image, its reference captions as lists of words; `hypotheses`: per image,
    one caption as words."""
    if len(references) != len(hypotheses) or not hypotheses:
        raise ValueError(f"{len(hypotheses)} captions for {len(references)} images")
    with warnings.catch_warnings():  # nltk warns at every zero n-gram count; the score says it
        warnings.simplefilter("ignore", UserWarning)
        return {name: float(corpus_bleu(references, hypotheses, weights=weights))
                for name, weights in BLEU_WEIGHTS.items()}


def caption_scores(references, hypotheses, meteor=True, per_image=False):
    """The COCO evaluation's scores (`coco_scores`) with nltk's BLEU beside them as
    `nltk_bleu1`..`nltk_bleu4` (on `tokenize`). `references`: per image, raw sentences;
    `hypotheses`: per image, one caption. Returns (scores, missing), and with `per_image` each
    image's CIDEr-D too."""
    scores, missing, each_cider = coco_scores(references, hypotheses, meteor, per_image=True)
    nltk = nltk_bleu([[tokenize(r) for r in refs] for refs in references],
                     [tokenize(h) for h in hypotheses])
    scores |= {f"nltk_{name}": value for name, value in nltk.items()}
    return (scores, missing, each_cider) if per_image else (scores, missing)


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
    score the captions against `references` (per image, its raw reference sentences) and
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
        scores, missing, each_cider = caption_scores(references, [" ".join(h) for h in hypotheses],
                                                     meteor, per_image=True)
        results.append({
            "label": setting.label + (", shuffled images" if shuffled_images else ""),
            "decoding": dataclasses.asdict(setting), "shuffled_images": shuffled_images,
            "scores": scores, "missing": missing,
            "diagnostics": caption_diagnostics(hypotheses, training_captions),
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


def evaluation_path(run_dir, split, settings):
    """Where notebook 05 keeps the evaluation of a split (a name, or a file of image names) with
    these decoding settings: a second evaluation with other settings never replaces the first."""
    decodings = "_".join(setting.slug for setting in settings)
    return Path(run_dir) / f"evaluation-{Path(str(split)).stem}-{decodings}.json"


def write_evaluation(run_dir, split, results, images):
    """`results` of `evaluate` in the file named after the split and their decodings."""
    settings = [DecodingSetting(**entry["decoding"]) for entry in results
                if not entry["shuffled_images"]]
    path = evaluation_path(run_dir, split, settings)
    write_json(path, {"format_version": EVALUATION_FORMAT, "run": str(run_dir),
                      "split": str(split), "images": images, "results": results})
    return path


def read_evaluation(run_dir, split):
    """The newest evaluation of a split written by notebook 05, or None if there is none."""
    stem = Path(str(split)).stem
    # This split's files, and the one an older notebook 05 wrote (to say so), not another split's
    # whose name starts with this one's.
    found = sorted([*Path(run_dir).glob(f"evaluation-{stem}-*.json"),
                    *Path(run_dir).glob(f"evaluation-{stem}.json")], key=lambda p: p.stat().st_mtime)
    if not found:
        return None
    data = read_json(found[-1])
    if data.get("format_version") != EVALUATION_FORMAT:
        raise ValueError(f"{found[-1]}: written by an older notebook 05; run notebook 05 again")
    return data
