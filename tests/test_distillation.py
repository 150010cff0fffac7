"""Distillation (utils/distillation.py): finished runs teach a student at the word level (their
next-word distributions) and the sequence level (their captions as more references); the
student trains, resumes exactly, refuses teachers that do not fit, and is an ordinary run."""
import json
import shutil

import keras
import numpy as np
import pytest

import utils
from conftest import is_a_caption, sample_run_config, stop_after, train_sample_run

TEMPERATURE, TOP_K = 2.0, 8  # the tests' student: flattened teachers, 8 words a position


@pytest.fixture(scope="module")
def teachers(sample_training, tmp_path_factory):
    """Two seeds of a small run on the sample: a student's teachers."""
    root = tmp_path_factory.mktemp("teachers")
    return [train_sample_run(root / f"seed{seed}", sample_training, seed=seed, epochs=3)
            for seed in (0, 1)]


def loss_inputs(k=3, vocab=7, seed=0):
    """Predictions [2, 5, vocab], reference targets [2, 5] (padding after each caption's end)
    and teachers' top-k words and probabilities [2, 5, k], all random."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(2, 5, vocab)) * 2
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    targets = np.array([[4, 5, 6, 3, 0], [4, 3, 0, 0, 0]], "float32")
    ids = np.stack([[rng.permutation(vocab)[:k] for _ in range(5)] for _ in range(2)])
    said = rng.random((2, 5, k))
    return probs, targets, ids.astype("float32"), (said / said.sum(-1, keepdims=True))


def test_the_distillation_loss_mixes_the_references_and_the_teachers_as_its_weight_says():
    """Weight 0: the smoothed cross-entropy alone; weight 1: temperature^2 x the cross-entropy
    of the student's flattened distribution against the teachers', over the real words only;
    in between, the mix."""
    probs, targets, ids, said = loss_inputs()
    packed = np.concatenate([targets[..., None], ids, said], -1)
    real = targets > 0
    flattened = np.log(probs) / TEMPERATURE
    flattened -= np.log(np.exp(flattened).sum(-1, keepdims=True))
    towards = -(said * np.take_along_axis(flattened, ids.astype(int), -1)).sum(-1)
    teachers_only = TEMPERATURE ** 2 * towards[real].mean()
    smoothed = float(utils.SmoothedCaptionLoss(0.1)(targets, probs))

    def loss(weight):
        return float(utils.DistillationLoss(0.1, weight, TEMPERATURE)(packed, probs))

    assert loss(0.0) == pytest.approx(smoothed, rel=1e-5)
    assert loss(1.0) == pytest.approx(teachers_only, rel=1e-5)
    assert loss(0.25) == pytest.approx(0.75 * smoothed + 0.25 * teachers_only, rel=1e-5)


def test_the_teachers_words_are_their_mean_distribution_flattened(teachers, sample_training):
    """With k the whole vocabulary, what is stored at each real position is the teachers' mean
    next-word distribution p, flattened (p ** (1 / T), normalised), to float16 precision; with a
    smaller k, its k likeliest words, renormalised; zeros after each caption's end."""
    prepared, vocab, names, features = sample_training
    decoder = utils.load_teachers(teachers, vocab, utils.load_run(teachers[0])[2].features,
                                  features.shape[1:], "student")
    rows, tokens = utils.CaptionData.encode(prepared, vocab, names, features).val
    rows, tokens = rows[:40], tokens[:40]
    length = int((tokens > 0).sum(1).max())
    mean = np.mean([keras.ops.convert_to_numpy(utils.load_run(t)[0](
        (features[rows], tokens[:, :length - 1]), training=False)) for t in teachers], 0)
    flattened = mean ** (1 / TEMPERATURE)
    flattened /= flattened.sum(-1, keepdims=True)                                 # (40, L, V)
    real = tokens[:, 1:length] > 0

    ids, said = utils.teacher_targets(decoder, features, rows, tokens, TEMPERATURE, len(vocab))
    whole = np.zeros_like(flattened)
    np.put_along_axis(whole, ids[:, :length - 1], said[:, :length - 1].astype("float32"), -1)
    np.testing.assert_allclose(whole[real], flattened[real], atol=2e-3)
    ids, said = utils.teacher_targets(decoder, features, rows, tokens, TEMPERATURE, TOP_K)
    likeliest = np.sort(np.argsort(-flattened, -1)[..., :TOP_K], -1)
    np.testing.assert_array_equal(np.sort(ids[:, :length - 1], -1)[real], likeliest[real])
    np.testing.assert_allclose(said[:, :length - 1][real].astype("float32").sum(-1), 1, atol=5e-3)
    assert not ids[:, :length - 1][~real].any() and not said[:, length - 1:].any()


def train_student(run_dir, sample_training, teacher_dirs, epochs=3, extra_callbacks=()):
    """A student of `teacher_dirs` at both levels, as notebook 04 trains one; returns its
    history."""
    prepared, vocab, names, features = sample_training
    run_dir.mkdir(parents=True, exist_ok=True)
    decoder = utils.load_teachers(teacher_dirs, vocab, utils.read_run(teacher_dirs[0])[1].features,
                                  features.shape[1:], run_dir)
    prepared = prepared.with_captions(utils.teacher_captions(
        decoder, prepared, names, features, run_dir / utils.TEACHER_CAPTIONS_FILE))
    data = utils.CaptionData.encode(prepared, vocab, names, features, run_dir / "captions")
    data = utils.with_teacher_targets(data, decoder, run_dir / utils.TEACHER_TARGETS_FOLDER,
                                      TEMPERATURE, TOP_K)
    config = sample_run_config(
        sample_training, data, seed=2, epochs=epochs, distillation_weight=0.5,
        distillation_temperature=TEMPERATURE, distillation_top_k=TOP_K, teacher_captions=True,
        teachers=[utils.weights_digest(t) for t in teacher_dirs])
    model = utils.build_model(config.model, config.training,
                              feature_stats=data.feature_statistics())
    utils.save_run(run_dir, config, vocab)
    return utils.train_caption_model(model, data, run_dir, config.training, extra_callbacks,
                                     verbose=0)


def test_a_student_trains_resumes_exactly_and_loads_as_any_run(teachers, sample_training,
                                                               tmp_path):
    """A student interrupted after its first epoch resumes and ends with the uninterrupted one's
    figures and weights; its training photos have one more caption each (the teachers'); its
    record names its teachers by their weights' digests; it loads, alone or in an ensemble with
    a teacher, and captions like any run."""
    whole = train_student(tmp_path / "whole", sample_training, teachers)
    with pytest.raises(KeyboardInterrupt):
        train_student(tmp_path / "cut", sample_training, teachers,
                      extra_callbacks=[stop_after(1)])
    counter = stop_after(99)
    resumed = train_student(tmp_path / "cut", sample_training, teachers, extra_callbacks=[counter])
    assert counter.started == 2
    assert [(h["epoch"], h["loss"], h["val_loss"]) for h in resumed] == [
        (h["epoch"], h["loss"], h["val_loss"]) for h in whole]
    student, vocab, config = utils.load_run(tmp_path / "cut")
    for a, b in zip(student.get_weights(), utils.load_run(tmp_path / "whole")[0].get_weights()):
        np.testing.assert_array_equal(a, b)

    prepared, _, names, features = sample_training
    extra = json.loads((tmp_path / "cut" / utils.TEACHER_CAPTIONS_FILE).read_text())
    assert sorted(extra) == prepared.names("train")
    references = sum(len(prepared.images[n]["captions"]) for n in prepared.names("train"))
    assert config.data.train.captions == references + sum(bool(c) for c in extra.values())
    assert config.training.teachers == tuple(utils.weights_digest(t) for t in teachers)
    assert utils.RunConfig.load(tmp_path / "cut" / "config.json") == config
    for runs in ([tmp_path / "cut"], [tmp_path / "cut", teachers[0]]):
        decoder = utils.load_decoder(runs)[0]
        captions = utils.decode(decoder, features[:4], utils.DecodingSetting(3))
        assert len(captions) == 4 and all(is_a_caption(c.text, vocab) for c in captions)


def test_teachers_that_do_not_fit_the_student_are_refused_by_name(teachers, sample_training,
                                                                  tmp_path):
    """Another vocabulary, other features (the record says so), another feature shape, the
    student's own folder: each refused, naming the teacher, before anything is computed."""
    prepared, vocab, names, features = sample_training
    source = utils.read_run(teachers[0])[1].features
    smaller = utils.build_vocabulary(utils.split_captions(prepared, "train")[:50])
    other_vocab = train_sample_run(tmp_path / "other-vocab", (prepared, smaller, names, features),
                                   epochs=1)
    other_features = shutil.copytree(teachers[0], tmp_path / "other-features")
    record = json.loads((other_features / "config.json").read_text())
    record["features"]["input_size"] = 99
    (other_features / "config.json").write_text(json.dumps(record))

    for teacher, what in [(other_vocab, "vocabulary"), (other_features, "features")]:
        with pytest.raises(utils.RunConfigError,
                           match=f"{teacher} cannot teach this run: not the same {what}"):
            utils.load_teachers([teachers[0], teacher], vocab, source, features.shape[1:],
                                tmp_path / "student")
    with pytest.raises(utils.RunConfigError, match="not the same feature shape"):
        utils.load_teachers(teachers, vocab, source, (9, features.shape[1]), tmp_path / "student")
    with pytest.raises(utils.RunConfigError, match="the student's own run folder"):
        utils.load_teachers(teachers, vocab, source, features.shape[1:], teachers[1])


@pytest.mark.parametrize("settings, message", [
    ({"teachers": ("0123456789abcdef",)}, "neither a distillation weight above 0"),
    ({"distillation_weight": 0.5}, "need teachers"),
    ({"teacher_captions": True}, "need teachers"),
    ({"teachers": ("0123456789abcdef",), "distillation_weight": 1.5}, "a share, 0 to 1"),
    ({"teachers": ("0123456789abcdef",), "teacher_captions": True, "distillation_top_k": 0},
     "top k 1 or more")])
def test_a_wrong_distillation_setting_is_refused_before_any_training(settings, message):
    with pytest.raises(ValueError, match=message):
        utils.TrainingConfig(**settings)


def test_a_distillation_weight_without_the_teachers_words_is_refused(sample_training, tmp_path):
    """Not silently trained on the references alone: the data must carry the teachers' words."""
    prepared, vocab, names, features = sample_training
    data = utils.CaptionData.encode(prepared, vocab, names, features)
    training = utils.TrainingConfig(teachers=("0123456789abcdef",), distillation_weight=0.5)
    model = utils.build_model(utils.ModelConfig(len(vocab), features.shape[1], units=32),
                              training, feature_stats=data.feature_statistics())
    with pytest.raises(ValueError, match="utils.with_teacher_targets"):
        utils.train_caption_model(model, data, tmp_path / "run", training, verbose=0)
