"""Self-critical training (utils/self_critical.py): its reward is pycocoevalcap's CIDEr-D, its
step moves each sampled caption the way its advantage says, and the phase resumes exactly."""
import dataclasses
import shutil

import keras
import numpy as np
import pytest
from pycocoevalcap.cider.cider_scorer import CiderScorer

import utils
from conftest import model_kinds, split_kind, train_sample_run

REFERENCES = [
    ["a dog runs on the grass", "a brown dog running through a field", "the dog is running"],
    ["two children play in the water", "kids splash in a pool", "two kids swim in the pool"],
    ["a man rides a bike down a hill", "a cyclist on a mountain trail", "a man on a bike"],
]
CAPTIONS = ["a dog runs through the grass", "two kids in the pool in the pool", "a man", ""]
# (image, caption) pairs scored; a caption of no word scores 0 in both.
PAIRS = [(0, 0), (1, 1), (2, 2), (0, 3), (2, 0)]


def ids_of(texts, words):
    """Captions as word ids [captions, words] (0 after the last), from a growing word list."""
    rows = [[words.setdefault(w, len(words) + 1) for w in text.split()] for text in texts]
    out = np.zeros((len(rows), max(map(len, rows), default=0) + 1), "int64")
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def test_the_reward_equals_pycocoevalcaps_cider_d():
    """Given the same document frequencies (those of the scored images' references, as
    pycocoevalcap takes them), the same CIDEr-D, caption by caption."""
    expected = CiderScorer(n=4, sigma=6.0)
    for image, caption in PAIRS:
        expected += (CAPTIONS[caption], REFERENCES[image])
    _, per_pair = expected.compute_score()
    words = {}
    references = [ids_of(refs, words) for refs in REFERENCES]
    # pycocoevalcap counts an image once per scored caption: the same references repeated.
    scorer = utils.CiderD.from_references([references[image] for image, _ in PAIRS])
    ours = [scorer.scores(references[image], ids_of([CAPTIONS[caption]], words))[0]
            for image, caption in PAIRS]
    np.testing.assert_allclose(ours, per_pair, rtol=1e-12, atol=1e-12)
    assert per_pair[0] > 1 and per_pair[3] == 0  # the figures mean something


def test_a_short_caption_scores_the_same_without_padding():
    """Decoded captions come as their words alone ([1, words], no 0 after them): one or two words
    score as they do padded (a greedy caption of two words once broke the n-gram keys)."""
    words = {}
    scorer = utils.CiderD.from_references([ids_of(refs, words) for refs in REFERENCES])
    references = ids_of(REFERENCES[2], words)
    for text in ("a man", "man"):
        padded = ids_of([text], words)
        exact = padded[:, :len(text.split())]
        assert scorer.scores(references, exact)[0] == scorer.scores(references, padded)[0] > 0


def test_document_frequencies_are_saved_and_read_back_without_a_pickle(tmp_path):
    words = {}
    scorer = utils.CiderD.from_references([ids_of(refs, words) for refs in REFERENCES])
    scorer.save(tmp_path / "df.npz")
    again = utils.CiderD.load(tmp_path / "df.npz")  # np.load(allow_pickle=False) inside
    caption = ids_of(["a dog on a bike"], words)
    assert again.images == 3
    assert again.scores(ids_of(REFERENCES[0], words), caption) == pytest.approx(
        scorer.scores(ids_of(REFERENCES[0], words), caption))


def test_a_splits_captions_are_grouped_by_image_without_start_and_end():
    vocab = utils.Vocabulary([*utils.SPECIAL_TOKENS, "dog", "runs", "cat"], 3)
    rows = np.array([5, 9, 1, 5])
    tokens = np.array([[2, 4, 5, 3, 0], [2, 6, 3, 0, 0], [2, 5, 5, 3, 0], [2, 4, 3, 0, 0]])
    split = utils.ImageReferences.of_split(rows, tokens, vocab)
    assert split.rows.tolist() == [5, 9, 1]  # in order of first appearance
    assert [[r.tolist() for r in refs] for refs in split.references] == [
        [[4, 5, 0, 0, 0], [4, 0, 0, 0, 0]], [[6, 0, 0, 0, 0]], [[5, 5, 0, 0, 0]]]


def test_each_samples_baseline_is_the_mean_reward_of_the_images_other_samples():
    rewards = [1.0, 0.0, 0.5, 2.0, 2.0, 2.0]  # two images, three samples each
    np.testing.assert_allclose(utils.advantages(rewards, 3), [0.75, -0.75, 0.0, 0, 0, 0])
    np.testing.assert_allclose(utils.advantages(rewards, 3, baseline=[0.5, 1.0]),
                               [0.5, -0.5, 0.0, 1, 1, 1])


@pytest.mark.parametrize("parameters, message", [
    ({"SELF_CRITICAL_BASELINE": "sampels"}, "unknown self-critical baseline 'sampels'; choose one "
                                            "of samples, greedy"),
    ({"SELF_CRITICAL_SAMPLES": 1}, "the samples baseline needs at least 2 samples an image"),
    ({"SELF_CRITICAL_EPOCHS": -1}, "self-critical epochs must be 0 or more"),
])
def test_a_wrong_second_phase_setting_is_refused_before_any_training(parameters, message):
    """Notebook 04's parameters become the record before the first phase trains: a misspelt
    baseline is refused there, not after an hour of cross-entropy training."""
    with pytest.raises(ValueError, match=message):
        utils.config_from_parameters(utils.TrainingConfig, {"EPOCHS": 5, **parameters})
    greedy = utils.config_from_parameters(utils.TrainingConfig, {"SELF_CRITICAL_BASELINE": "greedy",
                                                                 "SELF_CRITICAL_SAMPLES": 1})
    assert greedy.self_critical_baseline is utils.Baseline.GREEDY


@pytest.fixture(scope="module")
def cross_entropy_run(sample_training, tmp_path_factory):
    """A short first phase on the sample's shapes, kept to start the second phase from."""
    return train_sample_run(tmp_path_factory.mktemp("runs") / "first", sample_training, epochs=3)


def phase_inputs(sample_training, vocab):
    prepared, _, names, features = sample_training
    data = utils.CaptionData.encode(prepared, vocab, names, features)
    return features, *(utils.ImageReferences.of_split(*split, vocab)
                       for split in (data.train, data.val))


def test_samples_end_once_and_never_on_a_bad_ending(cross_entropy_run, sample_training):
    """An early model's samples, many of them: each says <end> once, never after a word of
    BAD_ENDINGS (the sample's captions are full of "a"), and never <unk>."""
    model, vocab, _ = utils.load_run(cross_entropy_run)
    features, train, _ = phase_inputs(sample_training, vocab)
    captions = utils.sample_captions(utils.CaptionDecoder(model, vocab), features[train.rows], 5,
                                     np.random.default_rng(0))
    sampled = utils.caption_ids(captions, vocab.end_id)
    assert len(sampled) == 5 * len(train.rows)
    ends = sampled == vocab.end_id
    assert (ends.sum(1) == 1).all()
    worded = ends.argmax(1) >= 1  # an empty caption is a sample too (its reward is 0)
    last_word = sampled[worded, ends.argmax(1)[worded] - 1]
    assert "a" in vocab.index and len(last_word) > len(sampled) // 2
    assert not np.isin(last_word, [vocab.index[w] for w in utils.BAD_ENDINGS
                                   if w in vocab.index]).any()
    assert not np.isin(sampled, [vocab.unk_id, vocab.start_id]).any()
    assert len({tuple(s) for s in sampled}) > len(train.rows)  # samples, not one caption each


def sequence_log_prob(model, feature, ids, vocab):
    """log p(caption | image) by the full model: its words and <end>."""
    tokens = np.array([[vocab.start_id, *ids]])
    probs = keras.ops.convert_to_numpy(model((feature[None], tokens)))[0]
    targets = [*ids, vocab.end_id]
    return float(np.log(probs[np.arange(len(targets)), targets]).sum())


def test_one_step_raises_a_caption_above_its_baseline_and_lowers_one_below(cross_entropy_run,
                                                                           sample_training):
    model, vocab, _ = utils.load_run(cross_entropy_run)
    features, train, _ = phase_inputs(sample_training, vocab)
    image = features[train.rows[:1]]
    better, worse = (vocab.encode(text)[1:] for text in ("a red circle", "a blue square"))
    width = max(map(len, (better, worse)))
    sequences = np.array([ids + [0] * (width - len(ids)) for ids in (better, worse)], "int32")
    before = [sequence_log_prob(model, image[0], ids[:-1], vocab) for ids in (better, worse)]
    step = utils.reinforce_step(model, keras.optimizers.Adam(1e-3), vocab.start_id)
    step(np.repeat(image, 2, 0), sequences, utils.advantages([1.0, 0.0], 2).astype("float32"))
    after = [sequence_log_prob(model, image[0], ids[:-1], vocab) for ids in (better, worse)]
    # Both captions share words, so a step can raise the worse one too (it did, on one core): what
    # every model must show is the better one raised, and raised more than the worse one.
    assert after[0] > before[0] and after[0] - after[1] > before[0] - before[1]


def second_phase(run_dir, sample_training, epochs, report=None, baseline="samples"):
    model, vocab, config = utils.load_run(run_dir)
    features, train, dev = phase_inputs(sample_training, vocab)
    training = dataclasses.replace(config.training, self_critical_epochs=epochs,
                                   self_critical_learning_rate=1e-3, batch_size=16,
                                   self_critical_baseline=baseline)
    return utils.train_self_critical(model, vocab, features, train, dev, run_dir, training,
                                     report), model


class StopAfter:
    """Interrupts the phase after `epochs` epochs, as a user's Ctrl-C would."""

    def __init__(self, epochs):
        self.epochs, self.seen = epochs, 0

    def set_model(self, model):
        pass

    def on_train_begin(self):
        pass

    def print_captions(self):
        self.seen += 1
        if self.seen == self.epochs:
            raise KeyboardInterrupt


def copy_run(source, target):
    shutil.copytree(source, target)
    return target


def test_an_interrupted_phase_resumes_and_ends_as_an_uninterrupted_one(cross_entropy_run,
                                                                       sample_training, tmp_path):
    whole, whole_model = second_phase(copy_run(cross_entropy_run, tmp_path / "whole"),
                                      sample_training, 3)
    cut = copy_run(cross_entropy_run, tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        second_phase(cut, sample_training, 3, StopAfter(2))
    assert len(utils.read_self_critical_history(cut)) == 3  # epoch 0, then two
    resumed, resumed_model = second_phase(cut, sample_training, 3)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(resumed) == drop(whole)
    for a, b in zip(whole_model.get_weights(), resumed_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert utils.self_critical_finished(cut, dataclasses.replace(
        utils.TrainingConfig(), self_critical_epochs=3))


@pytest.mark.parametrize("baseline", list(utils.Baseline))
def test_the_phase_keeps_its_best_dev_epoch_and_the_first_phases_weights(
        baseline, cross_entropy_run, sample_training, tmp_path):
    run_dir = copy_run(cross_entropy_run, tmp_path / "run")
    history, _ = second_phase(run_dir, sample_training, 3, baseline=baseline)
    assert [r["epoch"] for r in history] == [0, 1, 2, 3] and "reward" not in history[0]
    assert history[-1]["reward"] > 0
    best = max(history, key=lambda r: r["dev_cider_d"])
    _, vocab, _ = utils.load_run(cross_entropy_run)
    features, _, dev = phase_inputs(sample_training, vocab)
    scorer = utils.CiderD.from_references(dev.references)
    for weights, expected in ((utils.WEIGHTS_FILE, best), (utils.CROSS_ENTROPY_WEIGHTS, history[0])):
        model, _, _ = utils.load_run(cross_entropy_run)
        model.load_weights(run_dir / weights)
        captions = utils.decode(utils.CaptionDecoder(model, vocab), features[dev.rows],
                                utils.DecodingSetting(1, 0.0, 0))
        mean = np.mean([scorer.scores(refs, np.array([c.ids or (0,)]))[0]
                        for refs, c in zip(dev.references, captions)])
        assert mean == pytest.approx(expected["dev_cider_d"], abs=1e-5)
        words = np.mean([len(c.text.split()) for c in captions])
        assert words == pytest.approx(expected["dev_words"], abs=0.005)  # the length it learns
    assert (run_dir / utils.DOCUMENT_FREQUENCIES).is_file()
    assert second_phase(run_dir, sample_training, 3, baseline=baseline)[0] == history  # finished


def test_a_finished_run_gains_a_second_phase_but_keeps_its_first(cross_entropy_run, tmp_path):
    run_dir = copy_run(cross_entropy_run, tmp_path / "run")
    vocab, config = utils.read_run(run_dir)
    with_phase = dataclasses.replace(config, training=dataclasses.replace(
        config.training, self_critical_epochs=2))
    assert utils.save_run(run_dir, with_phase, vocab) is False  # saved: the phase is to run
    other_first = dataclasses.replace(with_phase, training=dataclasses.replace(
        with_phase.training, learning_rate=0.1))
    with pytest.raises(utils.RunConfigError, match="learning_rate"):
        utils.save_run(run_dir, other_first, vocab)


@pytest.mark.parametrize("kind", model_kinds())
def test_every_architecture_samples_and_learns_through_its_one_step(kind):
    """The phase needs nothing of an architecture but its `step` (sampling) and its `call` (the
    update): each samples captions of two images and takes a step that changes its weights."""
    architecture, grid = split_kind(kind)
    vocab = utils.Vocabulary([*utils.SPECIAL_TOKENS, "a", "red", "circle", "square"], 4)
    config = utils.ModelConfig(len(vocab), 6, architecture, units=16, blocks=1, heads=2,
                               positions=4 if grid else None)
    model = utils.build_model(config, utils.TrainingConfig(seed=0))
    features = np.random.default_rng(0).normal(size=(2, *config.image_shape)).astype("float32")
    sampled = utils.caption_ids(utils.sample_captions(utils.CaptionDecoder(model, vocab),
                                                      features, 3, np.random.default_rng(1)),
                                vocab.end_id)
    assert sampled.shape[0] == 6 and ((sampled == vocab.end_id).sum(1) == 1).all()
    before = [w.copy() for w in model.get_weights()]
    step = utils.reinforce_step(model, keras.optimizers.Adam(1e-2), vocab.start_id)
    step(np.repeat(features, 3, 0), sampled, np.linspace(-1, 1, 6).astype("float32"))
    assert any((a != b).any() for a, b in zip(before, model.get_weights()))
