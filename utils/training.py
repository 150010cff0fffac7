"""Stage 4: training a caption model, resumable, and saved with what a run needs later.

`build_model` makes the model of a run's `ModelConfig` (`utils.architectures`) seeded and compiled
as its `TrainingConfig` says; `train_caption_model` fits it on `CaptionData` (`utils.pipeline`; a
student's with what its teachers say, `utils.distillation`) with the best weights kept in
`model.weights.h5`, early stopping, a learning-rate schedule, a CSV history and BackupAndRestore:
an interrupted run resumes at its last finished epoch and ends exactly as an uninterrupted one
would. `distribution_strategy` spreads training over the GPUs.
"""
import csv
import shutil
import types
import warnings
from pathlib import Path

import h5py
import keras
import numpy as np
import tensorflow as tf
from keras import ops

from .architectures import build_caption_model
from .files import atomic_path, read_json, write_json
from .pipeline import batch_count
from .record import TrainingConfig

__all__ = ["WEIGHTS_FILE", "PLATEAU_MIN_GAIN", "build_model", "compile_model",
           "SmoothedCaptionLoss", "DistillationLoss", "BestModelCheckpoint", "RandomStateBackup",
           "ReplayedCounters",
           "read_history", "training_finished", "check_training_state", "STRATEGIES", "distribution_strategy",
           "train_caption_model"]

# The run folder's file of the model's best weights (the lowest validation loss); the model
# itself is rebuilt from the run record (utils.runs.load_run).
WEIGHTS_FILE = "model.weights.h5"
# The least progress the learning-rate schedule counts, whatever a smaller `min_gain` says: Keras's
# default, which every run trained before `min_gain` existed used.
PLATEAU_MIN_GAIN = 1e-4


def build_model(config, training=TrainingConfig(), embedding_matrix=None, feature_stats=None):
    """The one way a model is made for training: from its ModelConfig and TrainingConfig, seeded
    (same seed, same initial weights), in the training's precision, and compiled."""
    keras.utils.set_random_seed(training.seed)
    keras.mixed_precision.set_global_policy(
        "mixed_float16" if training.mixed_precision else "float32")
    return compile_model(build_caption_model(config, embedding_matrix, feature_stats), training)


@keras.saving.register_keras_serializable(package="utils")
class SmoothedCaptionLoss(keras.losses.Loss):
    """Cross-entropy against sparse targets smoothed towards the uniform distribution (label
    smoothing, as Keras's CategoricalCrossentropy does for one-hot targets), averaged over the
    real tokens only: padding targets (id 0) count for nothing."""

    def __init__(self, smoothing=0.1, **kwargs):
        super().__init__(**kwargs)
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        log_probs = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        return _mean_over_real_words(self.word_losses(y_true, log_probs), y_true)

    def word_losses(self, targets, log_probs):
        """Each position's smoothed cross-entropy [B, T], padding included."""
        target = ops.expand_dims(ops.cast(targets, "int32"), -1)
        nll = -ops.squeeze(ops.take_along_axis(log_probs, target, axis=-1), -1)
        return (1 - self.smoothing) * nll - self.smoothing * ops.mean(log_probs, axis=-1)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


def _mean_over_real_words(per_word, targets):
    """Per-position losses [B, T] scaled so that Keras's mean over all positions is the mean over
    the real tokens (targets not 0)."""
    real = ops.cast(ops.not_equal(targets, 0), per_word.dtype)
    return per_word * real * ops.cast(ops.size(real), real.dtype) / ops.maximum(ops.sum(real), 1)


@keras.saving.register_keras_serializable(package="utils")
class DistillationLoss(SmoothedCaptionLoss):
    """Word-level distillation (Hinton et al. 2015): each word's loss is (1 - `weight`) x the
    smoothed cross-entropy against the reference word, plus `weight` x `temperature`^2 x the
    cross-entropy of the student's distribution, flattened by `temperature`, against the
    teachers' (flattened alike, their top words only: utils.distillation). The targets pack, at
    each position, [reference id, k teacher word ids, their k probabilities] (utils.pipeline)."""

    def __init__(self, smoothing=0.1, weight=0.5, temperature=1.0, **kwargs):
        super().__init__(smoothing, **kwargs)
        self.weight, self.temperature = weight, temperature

    def call(self, y_true, y_pred):
        k = (y_true.shape[-1] - 1) // 2
        targets = y_true[..., 0]                                               # (B, T)
        teacher_ids = ops.cast(y_true[..., 1:1 + k], "int32")                  # (B, T, k)
        teacher_probs = y_true[..., 1 + k:]                                    # (B, T, k)
        log_probs = ops.log(ops.clip(y_pred, 1e-7, 1.0))                       # (B, T, V)
        flattened = ops.log_softmax(log_probs / self.temperature, axis=-1)
        towards_teachers = -ops.sum(
            teacher_probs * ops.take_along_axis(flattened, teacher_ids, axis=-1), -1)  # (B, T)
        per_word = ((1 - self.weight) * self.word_losses(targets, log_probs)
                    + self.weight * self.temperature ** 2 * towards_teachers)
        return _mean_over_real_words(per_word, targets)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight, "temperature": self.temperature}


def compile_model(model, training=TrainingConfig()):
    """Adam and cross-entropy over the real tokens only (padding targets, id 0, ignored), with
    sparse targets: never a one-hot matrix; for a student, the distillation loss. Also compiles
    the prefix formulation."""
    if training.distillation_weight:  # its targets carry the teachers' words (utils.distillation)
        loss = DistillationLoss(training.label_smoothing, training.distillation_weight,
                                training.distillation_temperature)
    elif training.label_smoothing:
        loss = SmoothedCaptionLoss(training.label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(ignore_class=0)
    model.compile(optimizer=keras.optimizers.Adam(training.learning_rate, clipnorm=5.0), loss=loss,
                  jit_compile=training.xla)
    return model


class BestModelCheckpoint(keras.callbacks.Callback):
    """Keeps the weights with the lowest validation loss in `path` (a .weights.h5 file), written
    atomically so that an interruption during a save never leaves a broken file."""

    def __init__(self, path, best=np.inf):
        super().__init__()
        self.path, self.best = Path(path), best

    def on_epoch_end(self, epoch, logs=None):
        if logs["val_loss"] < self.best:
            self.best = logs["val_loss"]
            with atomic_path(self.path) as tmp:
                self.model.save_weights(tmp)


def read_history(run_dir):
    """Per-epoch logs of a run, one dict per epoch (the last row wins if an epoch was logged twice)."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = {int(r["epoch"]): {k: float(v) for k, v in r.items()} for r in csv.DictReader(f)}
    return [rows[e] for e in sorted(rows)]


class RandomStateBackup(keras.callbacks.Callback):
    """Keeps the dropout layers' random state beside BackupAndRestore's weights, which leave it
    out: without it a resumed run draws other dropout masks than an uninterrupted one."""

    def __init__(self, backup_dir):
        super().__init__()
        self.path = Path(backup_dir) / "random_state.json"

    def _states(self):
        return [v for v in self.model.variables if v.path.endswith("seed_generator_state")]

    def on_train_begin(self, logs=None):
        if self.path.is_file():
            for variable, value in zip(self._states(), read_json(self.path)):
                variable.assign(np.array(value, dtype=variable.dtype))

    def on_epoch_end(self, epoch, logs=None):
        if self.path.is_file():  # the epoch before's, for a damaged checkpoint (double checkpoint)
            shutil.copy(self.path, f"{self.path}.bkp")
        write_json(self.path, [np.asarray(v).tolist() for v in self._states()])


class ReplayedCounters(keras.callbacks.Callback):
    """Gives a resumed run's early stopping and learning-rate schedule the counters they had
    (epochs without progress, best loss so far), by replaying the logged epochs through them.
    Listed after them: their own on_train_begin resets the counters first."""

    def __init__(self, logged_epochs, callbacks):
        super().__init__()
        self.logged_epochs, self.callbacks = logged_epochs, callbacks

    def on_train_begin(self, logs=None):
        for callback in self.callbacks:
            model = callback.model
            # The replay must not touch the real model: its learning rate was restored with it.
            callback.set_model(types.SimpleNamespace(optimizer=types.SimpleNamespace(
                learning_rate=1.0), stop_training=False))
            for row in self.logged_epochs:
                callback.model.optimizer.learning_rate = row["learning_rate"]
                callback.on_epoch_end(int(row["epoch"]), row)
            callback.set_model(model)


def check_training_state(run_dir):
    """Before a rerun resumes, drop or refuse what an interruption may have broken: a history row
    cut short is dropped (with a warning), and a checkpoint that cannot be read falls back to the
    one before it (Keras's double checkpoint); with neither whole, the error says how to go on.
    An epoch the checkpoint holds but the history lost (the interruption came between the two
    writes) is trained again from the checkpoint before it, so that no epoch goes unlogged."""
    history = Path(run_dir) / "history.csv"
    text = history.read_text() if history.is_file() else ""
    if text and not text.endswith("\n"):
        kept = text[:text.rfind("\n") + 1]
        with atomic_path(history) as tmp:
            tmp.write_text(kept)
        warnings.warn(f"{history}: its last row was cut short ({text[len(kept):]!r}), dropped; "
                      "that epoch is trained again", stacklevel=2)
    latest = Path(run_dir) / "backup" / "latest.weights.h5"
    if latest.exists() and not _whole_h5(latest):
        if not _whole_h5(Path(f"{latest}.bkp")):
            raise RuntimeError(f"{latest} is damaged and no earlier checkpoint is whole: delete "
                               f"{latest.parent} to train this run again from its first epoch")
        warnings.warn(f"{latest} is damaged; resuming from the checkpoint of the epoch before",
                      stacklevel=2)
        _restore_epoch_before(run_dir)
    logged = {int(h["epoch"]) for h in read_history(run_dir)}
    lost = [epoch for epoch in range(resumed_epoch(run_dir)) if epoch not in logged]
    if lost == [resumed_epoch(run_dir) - 1] and _whole_h5(Path(f"{latest}.bkp")):
        warnings.warn(f"{history}: epoch {lost[0] + 1} was trained but its row is lost; it is "
                      "trained again, from the checkpoint of the epoch before", stacklevel=2)
        _restore_epoch_before(run_dir)
    elif lost:
        warnings.warn(f"{history}: the rows of epochs {', '.join(str(e + 1) for e in lost)} are "
                      f"lost, and no checkpoint before them is kept: training resumes after them, "
                      "its early stopping and learning-rate schedule without them", stacklevel=2)


def _restore_epoch_before(run_dir):
    """What BackupAndRestore(double_checkpoint=True) does at the start of training with a damaged
    checkpoint, done here so that `resumed_epoch` reads the epoch training will really resume at."""
    backup = Path(run_dir) / "backup"
    for path in (backup / "latest.weights.h5", _backup_metadata(run_dir),
                 backup / "random_state.json"):
        if Path(f"{path}.bkp").is_file():
            shutil.copy(f"{path}.bkp", path)


def _backup_metadata(run_dir):
    return Path(run_dir) / "backup" / "training_metadata.json"


def training_finished(run_dir):
    """Whether `run_dir` holds a run whose training ended (it wrote its history, and
    BackupAndRestore removed its backup), rather than one interrupted or not yet started."""
    return (Path(run_dir) / "history.json").is_file() and not (Path(run_dir) / "backup").exists()


def resumed_epoch(run_dir):
    """The epoch an interrupted run resumes at: BackupAndRestore's record of finished epochs."""
    path = _backup_metadata(run_dir)
    return int(read_json(path)["epoch"]) if path.is_file() else 0


def _whole_h5(path):
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
        return True
    except (OSError, KeyError, RuntimeError):
        return False


# Where training runs (tf.distribute): one device, or every GPU of this machine. Several machines
# (MultiWorkerMirroredStrategy) are left out: Keras 3's `fit` fails under it, first reducing a
# batch across workers (keras-team/keras#20585), then its logs (docs/how-it-works.md, stage 4).
STRATEGIES = (None, "mirrored")


def distribution_strategy(name=None):
    """TensorFlow's distribution strategy `name`: None, one device (TensorFlow's default);
    "mirrored", every GPU of this machine (MirroredStrategy; without a GPU, its CPU devices).
    Build the model in its `scope()`; Keras's `fit` then splits each batch across the devices."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")
    if name == "mirrored":  # every GPU; without one, every CPU device (tests configure two)
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.get_strategy()


def train_caption_model(model, data, run_dir, training=TrainingConfig(), extra_callbacks=(),
                        verbose=1):
    """Fit `model` on `data` (CaptionData) as `training` says, with the best checkpoint, early
    stopping, a CSV history and, unless `training.lr_plateau_factor` is None, the learning rate
    multiplied by it after each epoch without a better validation loss. An interrupted run resumes
    from its last finished epoch (BackupAndRestore); a finished one is not trained again (its
    history is returned)."""
    run_dir = Path(run_dir)
    if training_finished(run_dir):
        return read_history(run_dir)
    if training.distillation_weight and data.teachers is None:
        raise ValueError("a distillation weight above 0 needs what the teachers say at each word: "
                         "give the data utils.with_teacher_targets(...) first")
    run_dir.mkdir(parents=True, exist_ok=True)
    check_training_state(run_dir)
    first, history = resumed_epoch(run_dir), read_history(run_dir)
    logged = [h for h in history if h["epoch"] < first]
    best_so_far = min((h["val_loss"] for h in history), default=np.inf)
    # A fall of validation loss under `min_gain` is no progress, to the schedule and to early
    # stopping alike (the best checkpoint still keeps the lowest loss): epochs that gain a few
    # thousandths each halve the learning rate, and then end the run.
    counted = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=training.patience,
                                             min_delta=training.min_gain)]
    if training.lr_plateau_factor is not None:  # before the CSV log, so that it logs the rate
        counted.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=training.lr_plateau_factor, patience=1, min_lr=1e-5,
            min_delta=max(training.min_gain, PLATEAU_MIN_GAIN)))
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), double_checkpoint=True),
        RandomStateBackup(run_dir / "backup"),
        BestModelCheckpoint(run_dir / WEIGHTS_FILE, best_so_far),
        *counted, ReplayedCounters(logged, counted),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        *extra_callbacks]
    train_data, val_data = data.datasets(training.batch_size, training.seed,
                                         (first, training.epochs))
    model.fit(train_data, validation_data=val_data, epochs=training.epochs, callbacks=callbacks,
              steps_per_epoch=batch_count(data.train[1], training.batch_size),
              shuffle=False, verbose=verbose)  # caption_dataset shuffles
    history = read_history(run_dir)
    write_json(run_dir / "history.json", history)
    return history
