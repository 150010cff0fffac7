"""Stage 5: the COCO evaluation, nltk's BLEU beside it, and the diagnostics of a broken model."""
import math
import shutil

import numpy as np
import pytest
from pycocoevalcap.meteor.meteor import Meteor

import utils

REFS = [[["a", "dog", "runs", "on", "the", "grass"], ["a", "brown", "dog", "is", "running"]],
        [["a", "man", "rides", "a", "bike"], ["a", "cyclist", "on", "a", "road"]]]
RAW = [[" ".join(r) for r in refs] for refs in REFS]


def coco(hypotheses, **options):
    return utils.coco_scores(RAW, [" ".join(h) for h in hypotheses], meteor=False, **options)


def test_bleu_uses_cumulative_weights_and_brevity_penalty():
    hypotheses = [["a", "dog", "runs"], ["a", "man", "rides", "a", "bike"]]
    scores = utils.nltk_bleu(REFS, hypotheses)
    # Every unigram matches; 8 hypothesis words against the closest reference lengths 5 + 5.
    assert scores["bleu1"] == pytest.approx(math.exp(1 - 10 / 8))
    # Bigrams: 2 of 2 and 4 of 4 match; BLEU-2 is the geometric mean of the two precisions.
    assert scores["bleu2"] == pytest.approx(math.exp(1 - 10 / 8))
    assert scores["bleu1"] >= scores["bleu2"] >= scores["bleu3"] >= scores["bleu4"] > 0


def test_cider_rewards_agreement_with_the_references():
    good = coco([["a", "dog", "runs"], ["a", "man", "rides", "a", "bike"]])[0]
    swapped = coco([["a", "man", "rides", "a", "bike"], ["a", "dog", "runs"]])[0]
    assert good["cider_d"] > 1.0 > swapped["cider_d"]
    assert coco([["zebra"], ["zebra"]])[0]["cider_d"] == 0.0
    scores, _, each = coco([["a", "dog", "runs"], ["a", "man", "rides", "a", "bike"]],
                           per_image=True)
    assert len(each) == 2 and sum(each) / 2 == pytest.approx(good["cider_d"]) == scores["cider_d"]
    assert each[1] > each[0] > 0  # the second caption matches a reference word for word


@pytest.mark.skipif(not shutil.which("java"), reason="METEOR runs pycocoevalcap's Java jar")
def test_meteor_with_java():
    good = utils.coco_scores(RAW, ["a dog runs", "a man rides a bike"])[0]
    java = utils.meteor_scorer().meteor_p  # the Java process that scored them
    swapped = utils.coco_scores(RAW, ["a man rides a bike", "a dog runs"])[0]
    assert 1.0 >= good["meteor"] > swapped["meteor"] >= 0.0
    # One scorer serves every call: Java's start (about 10 s) is paid once, not per decoding.
    assert utils.meteor_scorer().meteor_p is java and java.poll() is None


def test_scores_refuse_mismatched_lists():
    with pytest.raises(ValueError, match="1 captions for 2 images"):
        utils.coco_scores(RAW, ["a"])
    with pytest.raises(ValueError, match="1 captions for 2 images"):
        utils.nltk_bleu(REFS, [["a"]])


def test_diagnostics_catch_one_caption_for_every_image():
    same = [["a", "dog", "runs"]] * 4
    report = utils.caption_diagnostics(same, [["a", "dog", "runs"], ["a", "cat", "sits"]])
    assert report == {"images": 4, "distinct_captions": 1, "most_common_caption": "a dog runs",
                      "words_used": 3, "mean_length": 3.0, "copied_from_training": 1.0}
    varied = utils.caption_diagnostics([["a", "dog"], ["a", "cat", "sits"]], [["a", "cat", "sits"]])
    assert (varied["distinct_captions"], varied["copied_from_training"]) == (2, 0.5)


def test_evaluate_scores_each_setting_and_the_shuffled_control(sample_training, tmp_path):
    """On a trained run: one entry per setting with the scores of its own captions, the control
    with the images shuffled, and the results file read back as written."""
    from conftest import train_sample_run

    prepared, vocab, names, features = sample_training
    model, vocab, _ = utils.load_run(train_sample_run(tmp_path / "run", sample_training, epochs=6))
    decoder = utils.CaptionDecoder(model, vocab)
    row = {n: i for i, n in enumerate(names)}
    test = prepared.names("test")[:20]
    references = prepared.raw_references(test)
    greedy, beam = utils.DecodingSetting(1, 0.0, 2), utils.DecodingSetting(3, 1.0, 2)
    results = utils.evaluate(decoder, test, features[[row[n] for n in test]], references,
                             [greedy, beam], [c.split() for c in utils.split_captions(prepared, "train")],
                             control=greedy, meteor=False)
    assert [result.label for result in results] == [
        "greedy, no repeated 2-gram", "beam 3, length penalty 1, no repeated 2-gram",
        "greedy, no repeated 2-gram, shuffled images"]
    for entry, setting in zip(results, [greedy, beam]):
        assert entry is utils.find_result(results, setting)
        hypotheses = [caption.text.split()
                      for caption in utils.decode(decoder, features[[row[n] for n in test]], setting)]
        assert list(entry.captions.values()) == [" ".join(h) for h in hypotheses]
        assert (entry.scores, entry.missing) == utils.caption_scores(
            references, [" ".join(h) for h in hypotheses], meteor=False)
        assert entry.scores["nltk_bleu4"] == utils.nltk_bleu(
            [[utils.tokenize(r) for r in refs] for refs in references], hypotheses)["bleu4"]
        assert list(entry.cider_d_per_image) == test
        assert np.mean(list(entry.cider_d_per_image.values())) == pytest.approx(
            entry.scores["cider_d"])
        assert entry.diagnostics["images"] == 20
    control = utils.find_result(results, greedy, shuffled_images=True)
    assert control.scores["bleu4"] < results[0].scores["bleu4"]
    with pytest.raises(KeyError, match="no result for beam 5"):
        utils.find_result(results, utils.DEFAULT_DECODING)
    utils.write_evaluation(tmp_path / "run", "test", results, len(test))
    written = utils.read_evaluation(tmp_path / "run", "test")
    assert written.results == results and written.result(beam) == results[1]
    utils.write_evaluation(tmp_path / "run", "testing", results[:1], len(test))  # written later
    assert utils.read_evaluation(tmp_path / "run", "test").split == "test", "not another split"
    assert utils.read_evaluation(tmp_path / "run", "val") is None


RAW_REFERENCES = [["A dog runs on the grass .", "A brown dog is running outside .",
                   "A dog is running in a field ."],
                  ["Two children play soccer .", "Kids are playing football on a field .",
                   "Two boys kick a ball ."]]


def test_coco_bleu_agrees_with_nltk_where_it_should_and_differs_where_it_should():
    """Same tokens, same counts: BLEU-1..3 agree. Where no 4-gram matches, nltk's unsmoothed corpus
    BLEU-4 is 0 and the COCO evaluation's, smoothed by a tiny count, is not; and the PTB tokenizer
    splits "dog's" where `tokenize` makes it "dogs"."""
    def both(hypotheses):
        coco, missing = utils.coco_scores(RAW_REFERENCES, hypotheses)
        nltk = utils.nltk_bleu([[utils.tokenize(r) for r in refs] for refs in RAW_REFERENCES],
                               [h.split() for h in hypotheses])
        return coco, missing, nltk

    coco, missing, nltk = both(["a dog is running on the grass",
                                "two children are playing soccer on a field"])
    for n in (1, 2, 3, 4):
        assert coco[f"bleu{n}"] == pytest.approx(nltk[f"bleu{n}"], rel=1e-6)
    assert 0 < coco["meteor"] < 1 and 0 < coco["rouge_l"] < 1 and coco["spice"] is None
    assert list(missing) == ["spice"]
    coco, _, nltk = both(["a brown dog runs fast", "kids kick soccer balls"])  # no 4-gram matches
    assert nltk["bleu4"] < 1e-60 and 1e-9 < coco["bleu4"] < 1e-2
    possessive = [["The dog's ball is red ."]]
    assert utils.coco_scores(possessive, ["the dogs ball is red"])[0]["bleu1"] < 1
    assert utils.nltk_bleu([[utils.tokenize(possessive[0][0])]],
                           [["the", "dogs", "ball", "is", "red"]])["bleu1"] == pytest.approx(1)


def test_coco_scores_without_java_say_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    coco, missing = utils.coco_scores(RAW_REFERENCES, ["a dog runs", "two boys play"])
    assert coco["meteor"] is None and coco["bleu1"] > 0 and coco["cider_d"] > 0
    assert set(missing) == {"ptb_tokenizer", "meteor", "spice"}
    assert "no Java runtime" in missing["meteor"]


SCENES = [["A dog runs on the grass .", "A brown dog is running outside .", "The dog runs fast ."],
          ["A man rides a bike on a road .", "A cyclist on a road .", "Man riding a bicycle ."],
          ["Two children play in the snow .", "Kids playing in the snow .",
           "Two kids in the snow ."],
          ["A woman sits on a bench .", "A lady is sitting on a park bench .",
           "A woman resting on a bench ."],
          ["A boy jumps into a pool .", "A child is jumping into the water .",
           "A boy leaps into a swimming pool ."],
          ["A black cat sleeps on a sofa .", "A cat is asleep on the couch .",
           "The black cat naps on a sofa ."]]
FIRSTS = [refs[0].rstrip(" .") for refs in SCENES]  # each image's first reference, as a caption


def test_image_statistics_pool_to_the_coco_scores():
    """Pooled over all the images, the per-image statistics give the COCO evaluation's corpus
    scores exactly: BLEU and METEOR from summed statistics (METEOR's one exception included: the
    third image is matched in full in one chunk), ROUGE-L and CIDEr-D as means."""
    captions = ["a dog runs on grass", "a man on a road", "children play in snow",
                "a woman is sitting", "a boy jumps into the water", "a dog sleeps on a sofa"]
    java = bool(shutil.which("java"))
    (statistics,), missing = utils.image_statistics(SCENES, [captions], meteor=java)
    scores, _, each_cider = utils.coco_scores(SCENES, captions, meteor=java, per_image=True)
    every = np.arange(len(SCENES))
    meteor = Meteor() if java else None
    names = utils.COMPARED_SCORES if java else [n for n in utils.COMPARED_SCORES if n != "meteor"]
    assert java or ("meteor_stats" not in statistics and "meteor" in missing)
    # Rows of indices give one score per row: the full set, and the first image twice (scored
    # alone, but CIDEr-D keeps the whole set's document frequencies, as in any resample).
    rows = np.array([every, [0] * len(SCENES)])
    first_alone = utils.coco_scores(SCENES[:1], captions[:1], meteor=java)[0]
    first_alone["cider_d"] = each_cider[0]
    for name in names:
        assert utils.pooled_score(statistics, name, every, meteor) == pytest.approx(
            scores[name], rel=1e-9), name
        assert utils.pooled_score(statistics, name, rows, meteor) == pytest.approx(
            [scores[name], first_alone[name]], rel=1e-9), name


def test_compare_captions_gives_paired_bootstrap_intervals():
    shuffled = FIRSTS[1:] + FIRSTS[:1]  # every caption on the wrong image
    same, _ = utils.compare_captions(SCENES, [FIRSTS], [FIRSTS], meteor=False, resamples=200)
    assert all(c["gain"] == 0 and c["interval"] == [0, 0] for c in same.values())
    better, missing = utils.compare_captions(SCENES, [shuffled, shuffled[::-1]], [FIRSTS],
                                             resamples=200)
    assert set(better) == set(utils.COMPARED_SCORES) - set(missing)
    for name, c in better.items():
        low, high = c["interval"]
        assert 0 < low <= c["gain"] <= high, name  # clearly better on every resample
        assert c["gain"] == pytest.approx(c["second"] - c["first"], abs=2e-4)
    # Two runs on the first side are averaged: its score lies between each run's own.
    alone = [utils.compare_captions(SCENES, [run], [FIRSTS], meteor=False, resamples=10)[0]
             for run in (shuffled, shuffled[::-1])]
    lows, highs = sorted(a["cider_d"]["first"] for a in alone)
    assert lows <= better["cider_d"]["first"] <= highs


def test_dropping_one_letter_words_scores_captions_without_articles_as_the_seeds_do():
    """A recipe that cannot say "a" loses BLEU-4 against references that keep it, and nothing once
    one-letter words leave both sides."""
    bare = [" ".join(w for w in c.split() if len(w) > 1) for c in FIRSTS]
    coco, _ = utils.compare_captions(SCENES, [bare], [FIRSTS], meteor=False, resamples=100)
    assert coco["bleu4"]["gain"] > 0.3 and coco["cider_d"]["gain"] > 0
    dropped, _ = utils.compare_captions(SCENES, [bare], [FIRSTS], drop_one_letter=True,
                                        meteor=False, resamples=100)
    assert all(c["gain"] == 0 and c["first"] == c["second"] for c in dropped.values())
    assert dropped["bleu4"]["first"] == pytest.approx(1.0)
