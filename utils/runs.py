"""A training run: its record, and everything that reads a run folder back.

A run folder (`models/<RUN_NAME>/`) holds `model.weights.h5`, `vocabulary.json`, `history.*`, the
evaluations of notebook 05 and `config.json`: the `RunConfig`, written when training starts and
rebuilt from the file by `RunConfig.load`, as nanoGPT rebuilds `GPTConfig(**checkpoint[...])`. It
says where the features came from (encoder, weights, input size: what a new photo must go through
again), the model's shape, how it was trained, which vocabulary it speaks and on what data.
"""
import dataclasses
import hashlib
import os
import types
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from .architectures import ModelConfig, architecture_class, build_caption_model, set_feature_statistics
from .decoding import DEFAULT_DECODING, CaptionDecoder, Ensemble, decode
from .encoders import KERAS_BUILDING, Encoder, encoder_spec, weights_tag
from .evaluation import read_evaluations
from .features import CacheRecord, FeatureKind, FeatureSource
from .files import REPO_ROOT, read_json, require, write_json
from .images import ImageError, load_image
from .pipeline import DataCounts
from .self_critical import self_critical_finished, self_critical_started
from .training import WEIGHTS_FILE, TrainingConfig, training_finished
from .vocabulary import Vocabulary

__all__ = ["FORMAT_VERSION", "SAMPLE_RUN_WARNING", "RANDOM_ENCODER_NOTE", "RunConfigError",
           "NoEncoderError", "RunConfig", "config_from_parameters", "save_run", "read_run",
           "is_trained", "require_run_folder", "load_run", "load_decoder",
           "FeatureMismatchError", "check_features", "evaluation_folder", "why_no_encoder",
           "encoder_for_run", "Captioner", "caption_image", "caption_image_files", "RunSummary",
           "describe_run"]

FORMAT_VERSION = 1  # of config.json; files without one were written before run records (v0)
# What a run kept until December 2026 instead of WEIGHTS_FILE: the whole Keras model.
OLD_MODEL_FILE = "model.keras"
# What the app says of a run trained on the synthetic sample, whose scores look excellent.
SAMPLE_RUN_WARNING = ("Trained on the synthetic sample: it knows only coloured shapes, whatever "
                      "the photo.")


# Why a sample run's captions can name a wrong shape or colour while its BLEU-4 looks excellent.
RANDOM_ENCODER_NOTE = (
    "These features come from an encoder with random weights (the sample runs offline, without "
    "ImageNet's): they keep colours and layout better than shapes, so some captions name a wrong "
    "shape or colour; BLEU stays high because every caption of the sample has the same few "
    "sentence patterns, which the model gets right.")


class RunConfigError(ValueError):
    """A config.json that cannot be read as a run record; the message names the file and field."""


class NoEncoderError(ValueError):
    """A run that cannot encode a new photo: its message says why, and what to do instead."""


@dataclass(frozen=True)
class RunConfig:
    """Everything about a run but its weights and its vocabulary (saved beside it)."""
    dataset: str                # the DATASET its captions came from (data/<dataset>/)
    features: FeatureSource     # what made its image features
    vocabulary: str             # fingerprint of vocabulary.json, checked on loading
    embedding: dict             # the initial word vectors: notebook 03's source, dim and oov rule
    model: ModelConfig
    training: TrainingConfig
    data: DataCounts            # images and captions of its train and val splits
    format_version: int = FORMAT_VERSION

    def save(self, path):
        write_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path, vocab=None):
        """The record in `path`; a file from before format 1 is upgraded (it needs the run's
        `vocab` for the fingerprint it lacks)."""
        data = read_json(path)
        if not isinstance(data, dict):
            raise RunConfigError(f"{path}: not a run record (a JSON object)")
        version = data.get("format_version")
        if version is None:
            data = _upgrade_v0(data, vocab, path)
        elif version != FORMAT_VERSION:
            raise RunConfigError(f"{path}: format version {version}, this code reads "
                                 f"{FORMAT_VERSION}; update the repository (git pull)")
        record = _record(cls, data, path)
        try:
            architecture_class(record.model.architecture)
        except ValueError as e:
            raise RunConfigError(f"{path}: field 'model.architecture': {e}") from None
        weights = record.features.weights
        if record.features.kind == FeatureKind.CACHE and not (
                weights in ("random", "imagenet") or str(weights).startswith("file-")):
            raise RunConfigError(f"{path}: field 'features.weights' is {weights!r}, not random, "
                                 "imagenet or file-<digest>")
        return record


def config_from_parameters(config_class, parameters, **measured):
    """A config record (ModelConfig, TrainingConfig) from a notebook's parameters: each field from
    the parameter of its name in upper case (UNITS -> units), unless `measured` gives it (a size
    read off the data, the batch across devices); a field with neither keeps its default. The one
    mapping from parameters to records: notebook 04, the benchmarks and the tests use it."""
    named = {f.name: parameters[f.name.upper()] for f in dataclasses.fields(config_class)
             if f.name.upper() in parameters}
    return config_class(**named | measured)


# Fields added to format 1 after records were written, and what a record without one means: how
# its run was made (a record from before the attention model describes a model without a grid, a
# run from before `min_gain` stopped on any fall of validation loss).
ADDED_LATER = {"model.positions": None, "model.attention_regularization": 1.0,
               "model.blocks": 2, "model.heads": 4, "model.memory_slots": 4,
               "training.min_gain": 0.0, "training.self_critical_epochs": 0,
               "training.self_critical_learning_rate": 5e-5, "training.self_critical_samples": 5,
               "training.self_critical_baseline": "samples", "features.fingerprint": None}


def _record(cls, data, path, where=""):
    """A dataclass from its dict, refusing unknown and missing fields by name (but those of
    ADDED_LATER, which take the value they had before)."""
    if not isinstance(data, dict):
        raise RunConfigError(f"{path}: field {where.rstrip('.')!r} should be an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            raise RunConfigError(f"{path}: unknown field {where + name!r}")
    values = {}
    for name, field in fields.items():
        if name not in data and where + name in ADDED_LATER:
            values[name] = ADDED_LATER[where + name]
        elif name not in data:
            raise RunConfigError(f"{path}: missing field {where + name!r}")
        elif dataclasses.is_dataclass(field.type):
            values[name] = _record(field.type, data[name], path, f"{where}{name}.")
        else:
            values[name] = _typed(field, data[name], path, where + name)
    try:
        return cls(**values)
    except ValueError as e:  # a value the record's type refuses, such as an unknown kind
        raise RunConfigError(f"{path}: field {where.rstrip('.') or cls.__name__!r}: {e}") from None


# What a JSON value of each annotated type may be (a bool is no number, though Python says so).
_JSON_TYPES = {int: lambda v: type(v) is int, float: lambda v: type(v) in (int, float),
               bool: lambda v: type(v) is bool, str: lambda v: type(v) is str,
               dict: lambda v: type(v) is dict}


def _typed(field, value, path, name):
    """`value` if it is of `field`'s type (None where the field may be None), else the error
    naming the field: a record is never half-checked into a model."""
    kinds = field.type.__args__ if isinstance(field.type, types.UnionType) else (field.type,)
    if value is None and (type(None) in kinds or field.default is None):
        return value
    if any(_JSON_TYPES.get(kind, lambda v: isinstance(v, str))(value) for kind in kinds):
        return value
    wanted = " or ".join(getattr(kind, "__name__", str(kind)) for kind in kinds)
    raise RunConfigError(f"{path}: field {name!r} should be {wanted}, not {type(value).__name__}")


def _upgrade_v0(old, vocab, path):
    """A config.json as notebook 04 wrote it before run records: the same facts, flat."""
    if vocab is None:
        raise RunConfigError(f"{path}: written before run records; load it with its vocabulary")
    try:
        params, external = old["params"], old["weights"] == "external"
        source = (["external", old["features"], old["feature_dim"]] if external else
                  ["cache", old["features"], old["feature_dim"], old["encoder"], old["weights"],
                   old["input_size"]])
        return {
            "dataset": old["dataset"], "features": dataclasses.asdict(FeatureSource(*source)),
            "vocabulary": vocab.fingerprint, "embedding": old["embedding"],
            "model": dataclasses.asdict(ModelConfig(
                old["vocab_size"], old["feature_dim"], "merge", old["embedding"]["dim"],
                params["units"], params["dropout"], params["train_embedding"])),
            # Runs older than these two options trained without them.
            "training": dataclasses.asdict(TrainingConfig(
                **{k: params[k] for k in ("epochs", "batch_size", "learning_rate", "patience",
                                          "seed", "mixed_precision", "xla")},
                lr_plateau_factor=params.get("lr_plateau_factor"),
                label_smoothing=params.get("label_smoothing", 0.0), min_gain=0.0)),
            "data": {"train": old["train"], "val": old["val"]}, "format_version": FORMAT_VERSION}
    except KeyError as e:
        raise RunConfigError(
            f"{path}: written before run records had a format version, and without the field "
            f"{e.args[0]!r} that this code needs: train the run again with notebook 04") from None


# Settings that change how long a run trains, not what it learns: an unfinished run resumes with
# new values of these. Any other difference is another run, refused in the same folder.
EXTENDING = ("training.epochs", "training.patience")
# The second phase's settings (utils.self_critical): they may change until that phase starts, so
# that a finished cross-entropy run gains a self-critical phase without training again.
SECOND_PHASE = "training.self_critical"


def save_run(run_dir, config, vocab):
    """The record and the vocabulary of a run, written before training starts. Returns True when
    `run_dir` already holds this very run, finished (nothing to train: on Colab, a second visit).
    A folder holding a run with other settings is refused, never mixed with the new one; an
    unfinished run may resume with more epochs or more patience, and a run whose second phase
    has not started may change that phase's settings."""
    if config.vocabulary != vocab.fingerprint:
        raise ValueError("the run record names another vocabulary than the one given")
    run_dir = Path(run_dir)
    if (run_dir / "config.json").is_file():
        old = RunConfig.load(run_dir / "config.json", vocab)
        changed = [f"{name}: {a!r} -> {b!r}" for name, a, b in _differences(old, config)]
        second_open = not self_critical_started(run_dir)
        first = [c for c in changed if not (second_open and c.startswith(SECOND_PHASE))]
        learned = [c for c in first if not c.startswith(EXTENDING)]
        finished = training_finished(run_dir)
        if learned or (first and finished):
            raise RunConfigError(
                f"{run_dir} holds {'a finished' if finished else 'another'} run with other "
                f"settings ({'; '.join((learned or first)[:3])}): set RUN_NAME to a new name, "
                "or delete the folder to train it anew")
        if not changed:
            return finished and self_critical_finished(run_dir, config.training)
    else:
        vocab.save(run_dir / "vocabulary.json")
    config.save(run_dir / "config.json")
    return False


def _differences(a, b, prefix=""):
    """(field, a's value, b's value) for each field where two records differ, nested ones too."""
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if dataclasses.is_dataclass(x) and dataclasses.is_dataclass(y):
            yield from _differences(x, y, f"{prefix}{f.name}.")
        elif x != y:
            yield f"{prefix}{f.name}", x, y


def require_run_folder(run_dir):
    """`run_dir` as a Path, or an error naming it, where it was looked for, and the runs there
    are: a mistyped name, or a relative path from another folder, is not a missing stage."""
    run_dir = Path(run_dir)
    if run_dir.is_dir():
        return run_dir
    where = run_dir.parent if run_dir.parent.is_dir() else REPO_ROOT / "models"
    runs = sorted(p.name for p in where.iterdir() if is_trained(p)) if where.is_dir() else []
    raise FileNotFoundError(
        f"{run_dir} not found: run notebooks/04_train_model.ipynb first, or name a run folder "
        f"that exists (looked for in {Path.cwd() / run_dir}; "
        + (f"the runs in {where}: {', '.join(runs)})" if runs else f"no run in {where})"))


def read_run(run_dir):
    """(vocabulary, RunConfig) of a run, checked to belong together; the model is not loaded."""
    run_dir = require_run_folder(run_dir)
    for name in ("config.json", "vocabulary.json"):  # written by notebook 04, not by notebook 01
        require(run_dir / name, "04_train_model")
    vocab = Vocabulary.load(run_dir / "vocabulary.json")
    config = RunConfig.load(run_dir / "config.json", vocab)
    if config.vocabulary != vocab.fingerprint:
        raise RunConfigError(f"{run_dir / 'vocabulary.json'} is not the vocabulary this run was "
                             "trained with: train the run again with notebook 04")
    if config.model.vocab_size != len(vocab):
        raise RunConfigError(f"{run_dir / 'config.json'}: field 'model.vocab_size' is "
                             f"{config.model.vocab_size!r}, but the run's vocabulary has "
                             f"{len(vocab)} words")
    return vocab, config


def is_trained(run_dir):
    """Whether `run_dir` holds a trained run: its best weights (or, from before the record was
    the model's source, its model.keras)."""
    return any((Path(run_dir) / name).is_file() for name in (WEIGHTS_FILE, OLD_MODEL_FILE))


def load_run(run_dir):
    """(model, vocabulary, RunConfig) of a finished run: the model rebuilt from the record's
    ModelConfig, then its weights loaded; no pickle, no code beyond this package. A weights file
    that does not fit the record is refused. A run saved before the record was the model's one
    source (a whole `model.keras`, until December 2026) still loads: see `_weights_of_model_file`."""
    run_dir = require_run_folder(run_dir)
    weights = run_dir / WEIGHTS_FILE
    old_model_file = run_dir / OLD_MODEL_FILE
    if not old_model_file.is_file():
        require(weights, "04_train_model")
    vocab, config = read_run(run_dir)
    with KERAS_BUILDING:  # its layers' initialisers would draw from a seeded encoder's state
        model = build_caption_model(config.model)
        if weights.is_file():
            try:
                model.load_weights(weights)
            except ValueError as e:
                raise RunConfigError(
                    f"{weights} does not fit the model {run_dir / 'config.json'} describes "
                    f"({str(e).splitlines()[0]}): not this run's weights; train the run again "
                    "with notebook 04") from None
        else:
            _weights_of_model_file(model, old_model_file)
    return model, vocab, config


def _weights_of_model_file(model, path):
    """Copy the weights of a run's old `model.keras` (a whole Keras model, read by Keras in safe
    mode) into `model`, layer by layer of the same name; the feature statistics, constants of its
    Normalization layer, become the weights they are now."""
    old = keras.models.load_model(path, compile=False, safe_mode=True)
    for layer in model.layers:
        source = old.get_layer(layer.name)
        if layer is model.feature_norm:
            set_feature_statistics(model, keras.ops.reshape(source.mean, (-1,)),
                                   keras.ops.reshape(source.variance, (-1,)))
        else:
            layer.set_weights(source.get_weights())


def load_decoder(run_dirs):
    """(decoder, vocabulary, the first run's RunConfig) of finished runs: one run's
    CaptionDecoder, or several runs' Ensemble. An ensemble's runs must speak one vocabulary and
    read the same features (made alike, from one file, pooled or grids): a run that does not is
    refused, named beside the first."""
    first, *others = map(Path, run_dirs)
    where = [os.path.realpath(d) for d in (first, *others)]
    twice = [d for d, real in zip(others, where[1:]) if where.count(real) > 1]
    if twice:
        raise RunConfigError(f"{twice[0]} is in the ensemble twice: it would count double")
    model, vocab, config = load_run(first)
    decoders = [CaptionDecoder(model, vocab)]
    for run_dir in others:
        other_model, other_vocab, other = load_run(run_dir)
        for what, mine, theirs in [("vocabulary", config.vocabulary, other.vocabulary),
                                   ("features", config.features, other.features),
                                   ("reading of grids", config.model.reads_grid,
                                    other.model.reads_grid)]:
            if mine != theirs:
                raise RunConfigError(f"{run_dir} cannot join {first} in an ensemble: not the same "
                                     f"{what} ({theirs} against {mine})")
        decoders.append(CaptionDecoder(other_model, other_vocab))
    return (decoders[0] if not others else Ensemble(decoders)), vocab, config


class FeatureMismatchError(RunConfigError):
    """Features that are not of the kind a run was trained on; the message names the file."""


# How features given to a run are checked against its training features (`check_features`):
# rows read, the fewest that can tell, and the least correlation of their mean per dimension with
# the training mean. Measured on Flickr8k's dev photos: the run's own EfficientNet-Lite0 features
# 0.97 (1,000 rows) and 0.66 (20), EfficientNet-Lite2's of the same photos -0.02 and 0.01.
CHECK_ROWS, MIN_CHECK_ROWS, MIN_CORRELATION = 1000, 20, 0.4


def check_features(decoder, config, path, features):
    """Refuse to decode `features` (read from `path`) with a run, or every run of an ensemble,
    trained on features of another kind: a cache whose record names another encoder, or any table
    whose mean per dimension does not follow the training features' (kept in each model's
    Normalization layer), which a table made by another network of the same size does not. Fewer
    than MIN_CHECK_ROWS images cannot tell, and pass."""
    made = CacheRecord.read(path) if Path(path).is_dir() else None
    source = config.features
    if made and source.encoder and (made.encoder, made.weights, made.input_size) != (
            source.encoder, source.weights, source.input_size):
        raise FeatureMismatchError(
            f"{path}: made by {made.encoder} ({made.weights}, {made.input_size} px), but the run "
            f"was trained on {source.encoder} ({source.weights}, {source.input_size} px) features")
    if len(features) < MIN_CHECK_ROWS:
        return
    rows = np.linspace(0, len(features) - 1, min(len(features), CHECK_ROWS)).astype(int)
    sample = np.asarray(features[np.unique(rows)][:], "float64")  # FeatureRows read on slicing
    mean = sample.reshape(-1, sample.shape[-1]).mean(0)  # grids: every position
    for member in getattr(decoder, "members", [decoder]):
        trained = np.ravel(keras.ops.convert_to_numpy(member.model.feature_norm.mean))
        correlation = np.corrcoef(mean, trained)[0, 1] if len(trained) == len(mean) else -1
        if not correlation >= MIN_CORRELATION:
            raise FeatureMismatchError(
                f"{path}: not the kind of features the run was trained on "
                f"({source.encoder or Path(source.path).name}): their mean per dimension "
                f"correlates {correlation:.2f} with its training features' (its own give 0.9 or "
                "more). Another network made them? Give the run features of its own encoder.")


# An ensemble's folder name is cut to this many characters of its runs' names, then made unique
# by a digest of where the runs are: two ensembles never share a folder, however named.
ENSEMBLE_NAME_CHARS = 80


def evaluation_folder(models_dir, run_dirs):
    """Where notebook 05 writes the evaluation of these runs: a run's own folder, or an
    ensemble's folder in `models_dir`, named after its runs, so that no run's record shows an
    ensemble's scores as its own."""
    if len(run_dirs) == 1:
        return Path(run_dirs[0])
    where = "\n".join(os.path.realpath(d) for d in run_dirs)
    names = "+".join(Path(d).name for d in run_dirs)[:ENSEMBLE_NAME_CHARS]
    return Path(models_dir) / f"ensemble-{names}-{hashlib.sha1(where.encode()).hexdigest()[:8]}"


def why_no_encoder(config):
    """Why a run cannot caption a new photo, in one sentence with what to do instead; None when
    it can (its features came from notebook 02's cache, whose encoder is rebuilt)."""
    if config.features.kind != FeatureKind.EXTERNAL or config.features.encoder:
        return None
    return (f"This run was trained on features made outside this repository "
            f"({Path(config.features.path).name}), so it cannot encode a new photo the same way: "
            "it captions the images whose features you give it (FEATURES in notebook 05). To "
            "caption your own photos, train a run on features of notebook 02, or name the "
            "network that made these (FEATURES_ENCODER in notebook 04).")


def encoder_for_run(config, weights_file=None):
    """The CNN that made a run's features, so a new photo is encoded exactly like the training
    ones. Random weights are rebuilt from their seed; a weights file must be given again."""
    source = config.features
    why = why_no_encoder(config)
    if why:
        raise NoEncoderError(why)
    if source.weights.startswith("file-") and (
            weights_file is None or weights_tag(weights_file) != source.weights):
        raise ValueError(f"this run's encoder used a weights file ({source.weights}): pass its "
                         "path" + (f"; {weights_file} is another file" if weights_file else ""))
    weights = {"random": None, "imagenet": "imagenet"}.get(source.weights, weights_file)
    cnn = Encoder(source.encoder, weights, source.input_size).build(grid=config.model.reads_grid)
    if cnn.output_shape[-1] != source.dim:  # a declared encoder (FEATURES_ENCODER) that did not
        raise RunConfigError(f"{source.encoder} makes {cnn.output_shape[-1]} values an image, "
                             f"but this run's features ({Path(source.path).name}) have "
                             f"{source.dim}: another network made them")
    return cnn


@dataclass
class Captioner:
    """A run (or an Ensemble of runs) ready to caption new photos: its decoder, and the encoder
    that made its features."""
    decoder: CaptionDecoder | Ensemble
    encoder: keras.Model
    config: RunConfig

    @classmethod
    def from_run(cls, run_dir, weights_file=None):
        model, vocab, config = load_run(run_dir)
        return cls(CaptionDecoder(model, vocab), encoder_for_run(config, weights_file), config)


def caption_image(captioner, image, setting=DEFAULT_DECODING):
    """The `Caption` of one image (a path, an open file or a decoded image), read and scaled by the
    same `load_image` and `preprocess` as the feature cache, with its maps if the run attends.
    Raises ImageError, naming the image, for anything unusable."""
    source = captioner.config.features
    pixels = load_image(image, source.input_size)
    pixels = encoder_spec(source.encoder).preprocess(pixels[None])
    features = captioner.encoder.predict(pixels, verbose=0)
    return decode(captioner.decoder, features, setting)[0]


def caption_image_files(captioner, paths, setting=DEFAULT_DECODING):
    """Captions of image files, and apart from them why each unreadable file was skipped:
    ({path: Caption}, {path: the ImageError's message, which names the file})."""
    captions, unreadable = {}, {}
    for path in paths:
        try:
            captions[str(path)] = caption_image(captioner, path, setting)
        except ImageError as e:
            unreadable[str(path)] = str(e)
    return captions, unreadable


SPLIT_ORDER = ("test", "val", "train")  # how the evaluations of a run are listed


@dataclass(frozen=True)
class RunSummary:
    """What the app shows of a run: a line on what it is, and its scores as a table."""
    name: str
    about: str                  # architecture, dataset, encoder, vocabulary, training images
    sample: bool                # trained on the synthetic sample: it knows only coloured shapes
    scores: list                # one row a decoding and split: {"decoding", "split", "BLEU-4", ...}
    note: str = None            # why there are no scores, or which evaluation file is unreadable


def describe_run(run_dir):
    """The RunSummary of a run: its data, encoder and vocabulary, and the COCO-evaluation scores
    of each split notebook 05 evaluated, labelled by split (the shuffled-image control left out:
    it is for the notebook)."""
    run_dir = Path(run_dir)
    config = read_run(run_dir)[1]
    source = config.features
    made_by = f"{source.encoder} features ({source.weights} weights)" if source.encoder else ""
    if source.kind == FeatureKind.EXTERNAL:
        made_by = f"{made_by or 'features'} given in a file"
    about = (f"{config.model.architecture} model, {config.dataset} dataset, {made_by}, "
             f"{config.model.vocab_size:,} words, trained on {config.data.train.images:,} images")
    summary = RunSummary(run_dir.name, about, config.dataset == "sample", [])
    try:
        evaluations = read_evaluations(run_dir)
    except ValueError as e:
        return dataclasses.replace(summary, note=str(e))
    order = {split: i for i, split in enumerate(SPLIT_ORDER)}
    rows = [{"decoding": result.label,
             "split": split if split in order else f"{Path(split).name} ({evaluation.images})",
             "BLEU-4": round(result.scores["bleu4"], 3),
             "METEOR": None if result.scores.get("meteor") is None
             else round(result.scores["meteor"], 3),
             "CIDEr-D": round(result.scores["cider_d"], 3)}
            for split, evaluation in sorted(evaluations.items(),
                                            key=lambda e: (order.get(e[0], len(order)), e[0]))
            for result in evaluation.results if not result.shuffled_images]
    return dataclasses.replace(summary, scores=rows, note=None if rows else
                               "not evaluated yet: run notebook 05 for its scores")
