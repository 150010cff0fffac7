"""A run folder, written and read back: its record and vocabulary saved before training, the
model rebuilt from the record and its weights loaded, several runs joined as one ensemble.

A run folder (`models/<RUN_NAME>/`) holds `model.weights.h5`, `vocabulary.json`, `history.*`, the
evaluations of notebook 05 and `config.json`, the run's record (`utils.RunConfig`, utils/record.py).
Captioning a new photo with a run is utils/captioning.py's.
"""
import dataclasses
import hashlib
import os
from pathlib import Path

import keras
import numpy as np

from .architectures import architecture_class, build_caption_model, set_feature_statistics
from .decoding import CaptionDecoder, Ensemble
from .encoders import KERAS_BUILDING
from .features import CacheRecord
from .files import REPO_ROOT, require
from .record import RunConfig, RunConfigError
from .self_critical import self_critical_finished, self_critical_started
from .training import WEIGHTS_FILE, training_finished
from .vocabulary import Vocabulary

__all__ = ["run_folders", "save_run", "read_run", "is_trained", "require_run_folder", "load_run",
           "load_decoder", "feature_sources", "FeatureMismatchError", "check_features", "evaluation_folder"]

# What a run kept until December 2026 instead of WEIGHTS_FILE: the whole Keras model.
OLD_MODEL_FILE = "model.keras"


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
    try:
        architecture_class(config.model.architecture)
    except ValueError as e:
        raise RunConfigError(f"{run_dir / 'config.json'}: field 'model.architecture': {e}") from None
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


def run_folders(run_or_runs):
    """One path (a run folder, a features file), or a list of them (an ensemble), as Paths."""
    return [Path(run_or_runs)] if isinstance(run_or_runs, (str, Path)) else list(map(Path, run_or_runs))


def load_decoder(run_dirs):
    """(decoder, vocabulary, the first run's RunConfig) of finished runs: one run's
    CaptionDecoder, or several runs' Ensemble. An ensemble's runs must speak one vocabulary and
    have trained on one dataset's photos; each reads its own features (a run of another encoder
    reads that encoder's: the Ensemble's `sources` say what made each of its tables), with grids
    of as many positions or none. A run that does not fit is refused, named beside the first."""
    first, *others = map(Path, run_dirs)
    where = [os.path.realpath(d) for d in (first, *others)]
    twice = [d for d, real in zip(others, where[1:]) if where.count(real) > 1]
    if twice:
        raise RunConfigError(f"{twice[0]} is in the ensemble twice: it would count double")
    model, vocab, config = load_run(first)
    decoders, sources, reads = [CaptionDecoder(model, vocab)], [config.features], [0]
    for run_dir in others:
        other_model, other_vocab, other = load_run(run_dir)
        for what, mine, theirs in [("vocabulary", config.vocabulary, other.vocabulary),
                                   ("dataset", config.dataset, other.dataset),
                                   ("grid positions", config.model.positions,
                                    other.model.positions)]:
            if mine != theirs:
                raise RunConfigError(f"{run_dir} cannot join {first} in an ensemble: not the same "
                                     f"{what} ({theirs} against {mine})")
        if other.features not in sources:  # features of their own: a table of their own
            sources.append(other.features)
        reads.append(sources.index(other.features))
        decoders.append(CaptionDecoder(other_model, other_vocab))
    if not others:
        return decoders[0], vocab, config
    return Ensemble(decoders, reads, tuple(sources)), vocab, config


def feature_sources(decoder, config):
    """What made each table of a decoder's input (FeatureSources): one run's features, or an
    ensemble's tables side by side, each read by the members of that table."""
    return getattr(decoder, "sources", None) or (config.features,)


class FeatureMismatchError(RunConfigError):
    """Features that are not of the kind a run was trained on; the message names the file."""


# How features given to a run are checked against its training features (`check_features`):
# rows read, the fewest that can tell, and the least correlation of their mean per dimension with
# the training mean. Measured on Flickr8k's dev photos: the run's own EfficientNet-Lite0 features
# 0.97 (1,000 rows) and 0.66 (20), EfficientNet-Lite2's of the same photos -0.02 and 0.01.
CHECK_ROWS, MIN_CHECK_ROWS, MIN_CORRELATION = 1000, 20, 0.4


def check_features(decoder, config, path, features):
    """Refuse to decode `features` (read from `path`; an ensemble across encoders: one path per
    table, the tables side by side) with a run, or every run of an ensemble, trained on features
    of another kind: a cache whose record names another encoder, or any table whose mean per
    dimension does not follow the training features' (kept in each model's Normalization layer),
    which a table made by another network of the same size does not. Fewer than MIN_CHECK_ROWS
    images cannot tell, and pass."""
    sources, paths = feature_sources(decoder, config), run_folders(path)  # one path or a list
    if len(paths) != len(sources):
        raise ValueError(f"{len(paths)} features paths for {len(sources)} tables: an ensemble "
                         "across encoders reads one table of each encoder's features")
    for source, path in zip(sources, paths):
        made = CacheRecord.read(path) if Path(path).is_dir() else None
        if made and source.encoder and (made.encoder, made.weights, made.input_size) != (
                source.encoder, source.weights, source.input_size):
            raise FeatureMismatchError(
                f"{path}: made by {made.encoder} ({made.weights}, {made.input_size} px), but the "
                f"run was trained on {source.encoder} ({source.weights}, {source.input_size} px) "
                "features")
    if len(features) < MIN_CHECK_ROWS:
        return
    rows = np.linspace(0, len(features) - 1, min(len(features), CHECK_ROWS)).astype(int)
    sample = np.asarray(features[np.unique(rows)][:], "float64")  # FeatureRows read on slicing
    mean = sample.reshape(-1, sample.shape[-1]).mean(0)  # grids: every position
    widths = getattr(decoder, "table_widths", None) or (decoder.model.feature_norm.mean.shape[-1],)
    if sum(widths) != len(mean):
        raise FeatureMismatchError(f"{paths[0]}: {len(mean)} values an image, but the runs read "
                                   f"{sum(widths)}: another network made them")
    means = np.split(mean, np.cumsum(widths)[:-1])  # each table's
    for member, table in zip(getattr(decoder, "members", [decoder]),
                             getattr(decoder, "reads", [0])):
        trained = np.ravel(keras.ops.convert_to_numpy(member.model.feature_norm.mean))
        given, source = means[table], sources[table]
        correlation = np.corrcoef(given, trained)[0, 1] if len(trained) == len(given) else -1
        if not correlation >= MIN_CORRELATION:
            raise FeatureMismatchError(
                f"{paths[table]}: not the kind of features the run was "
                f"trained on ({source.encoder or Path(source.path).name}): their mean per "
                f"dimension correlates {correlation:.2f} with its training features' (its own "
                "give 0.9 or more). Another network made them? Give the run features of its own "
                "encoder.")


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


