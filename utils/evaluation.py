"""Stage 5: scoring captions the standard way, and the numbers that catch a broken model.

BLEU-1..4 are nltk's corpus BLEU (cumulative n-gram weights, all reference captions of an image,
no smoothing); CIDEr-D and METEOR are pycocoevalcap's, the COCO evaluation's own code. All read
captions tokenised by `captions.tokenize`, the same for references and model output.
"""
import shutil
import warnings
from collections import Counter

from nltk.translate.bleu_score import corpus_bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor

BLEU_WEIGHTS = {f"bleu{n}": tuple([1 / n] * n) for n in range(1, 5)}


def caption_scores(references, hypotheses, meteor=True):
    """Corpus BLEU-1..4, CIDEr-D and METEOR (None without Java, or with `meteor=False`: it takes
    about 10 s to start). `references`: per image, a list of reference captions, each a list of
    words; `hypotheses`: per image, one caption as words."""
    if len(references) != len(hypotheses) or not hypotheses:
        raise ValueError(f"{len(hypotheses)} captions for {len(references)} images")
    with warnings.catch_warnings():  # nltk warns at every zero n-gram count; the score says it
        warnings.simplefilter("ignore", UserWarning)
        scores = {name: float(corpus_bleu(references, hypotheses, weights=weights))
                  for name, weights in BLEU_WEIGHTS.items()}
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(h)] for i, h in enumerate(hypotheses)}
    scores["cider_d"] = float(Cider().compute_score(gts, res)[0])
    # METEOR is pycocoevalcap's Java jar: computed where Java is installed, None elsewhere.
    use_meteor = meteor and shutil.which("java")
    scores["meteor"] = float(Meteor().compute_score(gts, res)[0]) if use_meteor else None
    return scores


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
