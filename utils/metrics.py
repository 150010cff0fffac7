"""Stage 5's scores, as the papers compute them, and the statistics that compare two models.

The headline is the COCO caption evaluation's own code (pycocoevalcap), as every published table
computes it: its PTB tokenizer on the raw sentences, then BLEU-1..4, METEOR, ROUGE-L and CIDEr-D
(SPICE where its models are present). nltk's corpus BLEU on `captions.tokenize` stands beside it,
labelled `nltk_bleu1`..`nltk_bleu4`: it is what most tutorials report, and it differs. Per-image
statistics pool to the corpus scores, so two models are compared with paired bootstrap intervals.
Pure functions of sentences: no TensorFlow.
"""
import functools
import inspect
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from nltk.translate.bleu_score import corpus_bleu
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from .captions import tokenize

__all__ = ["BLEU_WEIGHTS", "meteor_scorer", "coco_tokens", "coco_scores", "nltk_bleu",
           "caption_scores", "COMPARED_SCORES", "image_statistics", "pooled_score",
           "compare_statistics", "grouped_statistics", "compare_captions", "caption_diagnostics"]

BLEU_WEIGHTS = {f"bleu{n}": tuple([1 / n] * n) for n in range(1, 5)}


# SPICE needs Stanford CoreNLP 3.6.0's jars beside pycocoevalcap's, which it downloads on first
# use (not possible offline): computed where they are present.
SPICE_JAR = (Path(inspect.getfile(PTBTokenizer)).parents[1] / "spice" / "lib" /
             "stanford-corenlp-3.6.0.jar")


@functools.cache
def meteor_scorer():
    """The one METEOR scorer of this process, for every decoding, notebook 05's and the
    benchmarks': a Java process whose start and first score take about 10 s, each later score a
    fraction of a second (0.14 s on 50 images here). pycocoevalcap's own lock serialises callers."""
    return Meteor()


def coco_tokens(references, caption_sets):
    """The COCO evaluation's PTB tokenizer (lowercase, punctuation out) on raw `references` (per
    image, its sentences) and on any number of `caption_sets` (each, per image, one caption), in
    one start of its Java. Returns ({image: [reference strings]}, [{image: [caption string]}] per
    set, missing); without Java, `tokenize` stands in and `missing` says so."""
    for captions in caption_sets:
        if len(captions) != len(references) or not captions:
            raise ValueError(f"{len(captions)} captions for {len(references)} images")
    sets = [{i: [c] for i, c in enumerate(captions)} for captions in caption_sets]
    if not shutil.which("java"):
        reason = ("no Java runtime (install one, e.g. Debian's default-jre-headless): BLEU, "
                  "ROUGE-L and CIDEr-D use utils.tokenize")
        return ({i: _words(refs) for i, refs in enumerate(references)},
                [{i: _words(c) for i, c in s.items()} for s in sets],
                {"ptb_tokenizer": reason, "meteor": reason})
    raw = {("ref", i): [{"caption": r} for r in refs] for i, refs in enumerate(references)}
    for k, s in enumerate(sets):
        raw |= {(k, i): [{"caption": c[0]}] for i, c in s.items()}
    tokens = PTBTokenizer().tokenize(raw)
    return ({i: tokens["ref", i] for i in range(len(references))},
            [{i: tokens[k, i] for i in s} for k, s in enumerate(sets)], {})


def _words(texts):
    return [" ".join(tokenize(text)) for text in texts]


def coco_scores(references, hypotheses, meteor=True, per_image=False):
    """The COCO caption evaluation, as the published tables compute it: its PTB tokenizer, then
    BLEU-1..4, METEOR, ROUGE-L and CIDEr-D (SPICE where its models are present).
    `references`: per image, the raw reference sentences; `hypotheses`: per image, one caption.
    The tokenizer and METEOR run on Java; without it, BLEU, ROUGE-L and CIDEr-D are computed on
    `tokenize` instead, and `missing` says so. `meteor=False` leaves METEOR out (its Java takes
    a few seconds to start). Returns (scores, missing: {score: why}), and with `per_image` each
    image's CIDEr-D too (the corpus's is their mean)."""
    gts, (res,), missing = coco_tokens(references, [hypotheses])
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"bleu{n}": float(b) for n, b in enumerate(bleu, 1)}
    if not meteor:
        missing.setdefault("meteor", "left out (meteor=False)")
    scores["meteor"] = None if "meteor" in missing else float(
        meteor_scorer().compute_score(gts, res)[0])
    scores["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    cider, each_cider = Cider().compute_score(gts, res)
    scores["cider_d"] = float(cider)
    scores["spice"] = None
    if SPICE_JAR.is_file() and "meteor" not in missing:
        from pycocoevalcap.spice.spice import Spice  # imported only where it can run
        scores["spice"] = float(Spice().compute_score(gts, res)[0])
    else:
        missing.setdefault("spice", "Stanford CoreNLP 3.6.0 is not in pycocoevalcap's spice/lib "
                                    "folder (pycocoevalcap downloads it on first use, with "
                                    "internet)")
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


COMPARED_SCORES = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider_d")
_WITHOUT_METEOR = tuple(name for name in COMPARED_SCORES if name != "meteor")


def image_statistics(references, caption_sets, drop_one_letter=False, meteor=True):
    """What each COCO score of each caption set is made of, image by image, so that the corpus
    scores of any choice of images (a bootstrap resample) follow without scoring again: BLEU's
    n-gram counts and METEOR's statistics (each corpus score pools them over images, as
    pycocoevalcap does), and each image's ROUGE-L and CIDEr-D (the corpus's are their mean).
    `references`: per image, raw sentences; `caption_sets`: caption lists on those images,
    tokenised in one go. `drop_one_letter` removes one-character words ("a") from captions and
    references alike after tokenising: the seed recipe's tokenisation. Returns ([{name: per-image
    array}] per set, missing)."""
    gts, sets, missing = coco_tokens(references, caption_sets)
    if drop_one_letter:
        gts, sets = _without_one_letter(gts), [_without_one_letter(s) for s in sets]
    if not meteor:
        missing.setdefault("meteor", "left out (meteor=False)")
    scorer = None if "meteor" in missing else meteor_scorer()
    cooked = [cook_refs(refs) for refs in gts.values()]
    statistics = []
    for res in sets:
        tests = [cook_test(res[i][0], refs, eff="closest") for i, refs in zip(gts, cooked)]
        each = {"bleu_counts": np.array([[t["testlen"], t["reflen"], *t["guess"], *t["correct"]]
                                         for t in tests], float),  # (images, 10)
                "rouge_l": np.asarray(Rouge().compute_score(gts, res)[1], float),
                "cider_d": np.asarray(Cider().compute_score(gts, res)[1], float)}
        if scorer:
            each["meteor_stats"] = _meteor_statistics(scorer, gts, res)
        statistics.append(each)
    return statistics, missing


def _without_one_letter(captions):
    return {i: [" ".join(w for w in c.split() if len(w) > 1) for c in texts]
            for i, texts in captions.items()}


# METEOR 1.5's sufficient statistics of one image (MeteorStats.toString): lengths and function
# words (4), then per matching stage exact/stem/synonym/paraphrase the matches of content and
# function words in test and reference (16), chunks, word matches (2).
_METEOR_MATCHES, _METEOR_CHUNKS = slice(4, 20), 20


def _meteor_statistics(scorer, gts, res):
    """(images, 23): each image's METEOR statistics, ready to be summed. METEOR pools them by
    summing, except the chunks of an image matched in full in one chunk (MeteorStats.addStats):
    those are zeroed here."""
    stats = np.array([[float(x) for x in scorer._stat(res[i][0], gts[i]).split()] for i in gts])
    matches = stats[:, _METEOR_MATCHES].reshape(len(stats), 4, 2, 2).sum(axis=(1, 2))  # test, ref
    perfect = (matches == stats[:, :2]).all(axis=1) & (stats[:, _METEOR_CHUNKS] == 1)
    stats[perfect, _METEOR_CHUNKS] = 0
    return stats


def _meteor_of_pooled(scorer, pooled):
    """METEOR of each row of pooled statistics, from its own Java (one line, one row a segment)."""
    rows = np.atleast_2d(pooled)
    with scorer.lock:  # pycocoevalcap's own protocol: EVAL, then one score a segment and the total
        scorer.meteor_p.stdin.write(("EVAL ||| " + " ||| ".join(
            " ".join(map(repr, map(float, row))) for row in rows) + "\n").encode())
        scorer.meteor_p.stdin.flush()
        scores = [float(scorer.meteor_p.stdout.readline()) for _ in range(len(rows) + 1)][:-1]
    return np.array(scores).reshape(np.shape(pooled)[:-1])


def pooled_score(statistics, name, images, meteor=None):
    """The corpus score `name` of one caption set's `image_statistics` over `images` (indices,
    repeats allowed); a 2-d array of indices gives one score per row. METEOR needs `meteor`, a
    running pycocoevalcap Meteor, to compute it from the pooled statistics."""
    if name == "meteor":
        return _meteor_of_pooled(meteor, statistics["meteor_stats"][images].sum(axis=-2))
    if not name.startswith("bleu"):
        return statistics[name][images].mean(axis=-1)
    n = int(name[4:])
    # (..., 10) pooled: caption length, reference length, guessed n-grams, correct n-grams
    counts = statistics["bleu_counts"][images].sum(axis=-2)
    tiny, small = 1e-15, 1e-9  # pycocoevalcap's, so that the full set gives its score exactly
    precision = (counts[..., 6:6 + n] + tiny) / (counts[..., 2:2 + n] + small)
    ratio = (counts[..., 0] + tiny) / (counts[..., 1] + small)
    brevity = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return np.prod(precision, axis=-1) ** (1 / n) * brevity


def compare_statistics(first, second, resamples=1000, seed=0, level=0.95):
    """How much better `second` scores than `first` (each a list of `image_statistics` of runs on
    the same images, one per seed, say), with a paired bootstrap interval over images: each
    resample draws the images with replacement, the same draw for both, and averages the corpus
    score of every run on it. Returns {score: {"first", "second", "gain", "interval"}}, the first
    three on all the images, means over runs."""
    count = len(first[0]["cider_d"])
    draws = np.random.default_rng(seed).integers(0, count, (resamples, count))
    with_meteor = all("meteor_stats" in s for s in [*first, *second])
    meteor = meteor_scorer() if with_meteor else None
    comparison = {}
    for name in COMPARED_SCORES if with_meteor else _WITHOUT_METEOR:
        full = [np.mean([pooled_score(s, name, np.arange(count), meteor) for s in runs])
                for runs in (first, second)]
        gains = (np.mean([pooled_score(s, name, draws, meteor) for s in second], axis=0)
                 - np.mean([pooled_score(s, name, draws, meteor) for s in first], axis=0))
        low, high = np.quantile(gains, [(1 - level) / 2, (1 + level) / 2])
        comparison[name] = {"first": _rounded(full[0]), "second": _rounded(full[1]),
                            "gain": _rounded(full[1] - full[0]),
                            "interval": [_rounded(low), _rounded(high)]}
    return comparison


def grouped_statistics(references, groups, drop_one_letter=False, meteor=True):
    """`image_statistics` of named groups of runs on the same images ({name: [captions per image]
    per run}), tokenised and scored in one go. Returns ({name: [statistics per run]}, missing)."""
    statistics, missing = image_statistics(
        references, [captions for runs in groups.values() for captions in runs], drop_one_letter,
        meteor)
    grouped, first = {}, 0
    for name, runs in groups.items():
        grouped[name], first = statistics[first:first + len(runs)], first + len(runs)
    return grouped, missing


def _rounded(value):
    return round(float(value), 4) + 0.0  # + 0.0: never "-0.0"


def compare_captions(references, first, second, drop_one_letter=False, meteor=True,
                     resamples=1000, seed=0):
    """Two sets of captions of the same images compared, score by score, with paired bootstrap
    intervals (`compare_statistics`). `references`: per image, raw sentences; `first`, `second`:
    each a list of runs (seeds, say), a run one caption per image. Returns (comparison, missing)."""
    grouped, missing = grouped_statistics(references, {"first": first, "second": second},
                                          drop_one_letter, meteor)
    return compare_statistics(grouped["first"], grouped["second"], resamples, seed), missing


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
