"""Stage 4, second phase: self-critical sequence training (Rennie et al. 2017), for every
architecture.

Cross-entropy teaches the next word after the reference's prefix; captions are then written from
the model's own prefixes and judged by CIDEr-D. This phase closes the gap. Its three parts live
apart, as self-critical.pytorch keeps `rewards`, `RewardCriterion` and the model's `_sample`:

    sampling    `utils.sample_captions`: the one search of decoding, each row drawing its next
                word from the model; every sample of every image in one batched pass, never
                ending on a BAD_ENDINGS word
    reward      `utils.CiderD` (utils/cider.py): CIDEr-D with the document frequencies of the
                *training* references, computed once and kept in the run folder
    REINFORCE   here: `advantages` (the reward minus a baseline, `Baseline`: "samples", the mean
                reward of the image's other samples, or "greedy", the reward of its greedy
                caption) and `reinforce_step`, which raises the log-probability of the captions
                rewarded above their baseline and lowers the others'

    selection   the epoch with the best dev CIDEr-D of greedy captions, the cross-entropy model
                (epoch 0) included: the phase never leaves a run worse on dev than it found it

Its files, in the run folder: `cross_entropy.weights.h5` (the first phase's best weights, where
this phase starts), `model.weights.h5` (the best epoch of both phases: what loads), the document
frequencies (`DOCUMENT_FREQUENCIES`), its history (`self_critical.json`) and, while it runs, one
checkpoint file (weights, optimizer and history in one atomic write): an interrupted phase
resumes at its last finished epoch and ends exactly as an uninterrupted one.
"""
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .cider import CiderD
from .decoding import (
    CaptionDecoder,
    DecodingSetting,
    bad_endings,
    caption_ids,
    decode,
    floored_log,
    sample_captions,
)
from .files import atomic_path, read_json, write_json
from .record import Baseline
from .training import WEIGHTS_FILE

__all__ = ["CROSS_ENTROPY_WEIGHTS", "DOCUMENT_FREQUENCIES", "ImageReferences", "advantages",
           "reinforce_step", "self_critical_started", "self_critical_finished",
           "read_self_critical_history", "train_self_critical"]

CROSS_ENTROPY_WEIGHTS = "cross_entropy.weights.h5"  # the first phase's best, kept
DOCUMENT_FREQUENCIES = "cider_document_frequencies.npz"  # the reward's, from the training split
HISTORY_FILE = "self_critical.json"  # one row per epoch, epoch 0 the cross-entropy model
CHECKPOINT_FILE = "self_critical_checkpoint.npz"  # while the phase runs; removed when it ends
GREEDY = DecodingSetting(1, 0.0, 0)  # how the dev captions that select the epoch are written


@dataclass(frozen=True)
class ImageReferences:
    """The images of a split as this phase reads them: their rows of the feature table and, per
    image, its encoded reference captions [captions, words] (word ids, 0 after the last word)."""
    rows: np.ndarray
    references: list

    @classmethod
    def of_split(cls, rows, tokens, vocab):
        """From a CaptionData split (image row [M], tokens [M, T] with <start> and <end>)."""
        rows, tokens = np.asarray(rows), np.asarray(tokens)
        words = np.where(np.isin(tokens, [vocab.start_id, vocab.end_id]), 0, tokens)
        words = _left_aligned(words)
        images, first = np.unique(rows, return_index=True)        # sorted, and where first seen
        order = np.argsort(rows, kind="stable")
        groups = np.split(words[order], np.searchsorted(rows[order], images)[1:])
        seen = np.argsort(first)                                     # images in order of appearance
        return cls(images[seen], [groups[i] for i in seen])


def _left_aligned(words):
    """Each row's nonzero ids moved to its start, in order (<start> removed leaves a hole)."""
    order = np.argsort(words == 0, axis=1, kind="stable")
    return np.take_along_axis(words, order, axis=1)


def advantages(rewards, samples, baseline=None):
    """Each sample's reward minus its baseline [images * samples]: the mean reward of the image's
    other samples, or, given `baseline` [images] (the greedy captions' rewards), that."""
    per_image = np.asarray(rewards, float).reshape(-1, samples)             # (images, samples)
    if baseline is None:
        baseline = (per_image.sum(1, keepdims=True) - per_image) / (samples - 1)
    else:
        baseline = np.asarray(baseline, float)[:, None]
    return (per_image - baseline).ravel()


def reinforce_step(model, optimizer, start_id):
    """One REINFORCE step, traced once: the log-probability of each sampled caption's words
    (<end> included, padding not), weighted by its advantage, averaged over the words."""

    @tf.function(reduce_retracing=True)
    def step(features, sequences, advantage):
        starts = tf.fill([tf.shape(sequences)[0], 1], start_id)
        inputs = tf.concat([starts, sequences[:, :-1]], 1)                    # (N, T)
        with tf.GradientTape() as tape:
            # No dropout: the captions were sampled from this very network.
            probs = model((features, inputs), training=False)                # (N, T, V)
            picked = tf.gather(probs, sequences, batch_dims=2)                 # (N, T)
            real = tf.cast(sequences > 0, tf.float32)
            log_probs = floored_log(picked) * real
            loss = -tf.reduce_sum(advantage[:, None] * log_probs) / tf.reduce_sum(real)
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def read_self_critical_history(run_dir):
    """The phase's rows, one per epoch (epoch 0: the cross-entropy model), finished or not."""
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT_FILE).is_file():
        with np.load(run_dir / CHECKPOINT_FILE, allow_pickle=False) as f:
            return json.loads(str(f["history"]))
    return read_json(run_dir / HISTORY_FILE) if (run_dir / HISTORY_FILE).is_file() else []


def self_critical_started(run_dir):
    """Whether the run's second phase has begun (its first checkpoint is written)."""
    return any((Path(run_dir) / name).is_file() for name in (CHECKPOINT_FILE, HISTORY_FILE))


def self_critical_finished(run_dir, training):
    """Whether the run's second phase ran all of `training.self_critical_epochs` (or has none)."""
    return (not training.self_critical_epochs
            or (Path(run_dir) / HISTORY_FILE).is_file()
            and not (Path(run_dir) / CHECKPOINT_FILE).is_file())


def _save_checkpoint(path, model, optimizer, history):
    """Weights, optimizer state and history in one file, written atomically: they never
    disagree, whenever the phase is interrupted."""
    arrays = {f"weight_{i}": w for i, w in enumerate(model.get_weights())}
    arrays |= {f"optimizer_{i}": keras.ops.convert_to_numpy(v)
               for i, v in enumerate(optimizer.variables)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, history=json.dumps(history), **arrays)


def _load_checkpoint(path, model, optimizer):
    with np.load(path, allow_pickle=False) as f:
        model.set_weights([f[f"weight_{i}"] for i in range(len(model.get_weights()))])
        optimizer.build(model.trainable_variables)
        for i, variable in enumerate(optimizer.variables):
            variable.assign(f[f"optimizer_{i}"])
        return json.loads(str(f["history"]))


def _dev_row(decoder, features, dev, scorer, epoch, **logged):
    """Epoch `epoch`'s row: its greedy dev captions' CIDEr-D (the reward's scorer, with the dev
    references' own document frequencies, as the evaluation has them), bad endings and mean
    length in words (the reward can shorten captions)."""
    captions = decode(decoder, features, GREEDY)
    scores = [scorer.scores(refs, caption_ids([c]))[0] for refs, c in zip(dev.references, captions)]
    return {"epoch": epoch, **logged, "dev_cider_d": round(float(np.mean(scores)), 5),
            "bad_endings": bad_endings([c.text for c in captions]),
            "dev_words": round(float(np.mean([len(c.text.split()) for c in captions])), 2)}


def train_self_critical(model, vocab, features, train, dev, run_dir, training, report=None):
    """The second phase, `training.self_critical_epochs` epochs, from the first phase's best
    weights in `run_dir`; `train` and `dev` are `ImageReferences`. Keeps the epoch with the best
    dev CIDEr-D (greedy) as the run's model.weights.h5; resumes after an interruption; a finished
    phase is not run again. `report` (an EpochReport) prints the shown images' captions after
    each epoch. Returns the history: one row per epoch, epoch 0 the cross-entropy model."""
    run_dir = Path(run_dir)
    if self_critical_finished(run_dir, training):
        return read_self_critical_history(run_dir)
    scorer = _document_frequencies(run_dir / DOCUMENT_FREQUENCIES, train)
    train_vectors = [scorer.vectors(refs) for refs in train.references]
    dev_scorer = CiderD.from_references(dev.references)
    dev_vectors = ImageReferences(dev.rows, [dev_scorer.vectors(r) for r in dev.references])
    dev_features = np.asarray(features[dev.rows], "float32")
    optimizer = keras.optimizers.Adam(training.self_critical_learning_rate, clipnorm=5.0)
    decoder = CaptionDecoder(model, vocab)
    checkpoint = run_dir / CHECKPOINT_FILE
    if checkpoint.is_file():
        history = _load_checkpoint(checkpoint, model, optimizer)
    else:  # the start: the first phase's best weights, kept aside, and their dev score
        if not (run_dir / CROSS_ENTROPY_WEIGHTS).is_file():
            shutil.copy(run_dir / WEIGHTS_FILE, run_dir / CROSS_ENTROPY_WEIGHTS)
        model.load_weights(run_dir / CROSS_ENTROPY_WEIGHTS)
        optimizer.build(model.trainable_variables)
        history = [_dev_row(decoder, dev_features, dev_vectors, dev_scorer, 0)]
        _save_checkpoint(checkpoint, model, optimizer, history)
    if report is not None:
        report.set_model(model)
        report.on_train_begin()
    step = reinforce_step(model, optimizer, vocab.start_id)
    for epoch in range(len(history), training.self_critical_epochs + 1):
        started = time.perf_counter()
        reward = _epoch(step, decoder, scorer, train_vectors, features, train.rows, training, epoch)
        seconds = time.perf_counter() - started
        row = _dev_row(decoder, dev_features, dev_vectors, dev_scorer, epoch,
                       reward=round(reward, 5), seconds=round(seconds, 1))
        if row["dev_cider_d"] > max(h["dev_cider_d"] for h in history):
            with atomic_path(run_dir / WEIGHTS_FILE) as tmp:
                model.save_weights(tmp)
        history.append(row)
        _save_checkpoint(checkpoint, model, optimizer, history)
        print(f"self-critical epoch {epoch}: mean reward {row['reward']:.3f}, dev CIDEr-D "
              f"{row['dev_cider_d']:.3f} (greedy), {row['bad_endings']} bad endings, "
              f"{seconds:.1f} s")
        if report is not None:
            report.print_captions()
    write_json(run_dir / HISTORY_FILE, history)
    checkpoint.unlink()
    return history


def _epoch(step, decoder, scorer, train_vectors, features, rows, training, epoch):
    """One epoch of the phase: every training image once, `training.batch_size` images a step
    (each with `self_critical_samples` samples), in an order and with samples drawn from (seed,
    epoch, step) alone, so that a resumed epoch is the uninterrupted one. Returns the mean
    reward of its samples."""
    samples, vocab = training.self_critical_samples, decoder.vocab
    order = np.random.default_rng([training.seed, epoch]).permutation(len(rows))
    rewards = []
    for batch, first in enumerate(range(0, len(order), training.batch_size)):
        images = order[first:first + training.batch_size]
        image_features = np.asarray(features[rows[images]], "float32")
        sampled = sample_captions(decoder, image_features, samples,
                                  np.random.default_rng([training.seed, epoch, batch]))
        words = caption_ids(sampled)                                         # (images * samples, L)
        rewarded = np.concatenate([
            scorer.scores(train_vectors[i], words[j * samples:(j + 1) * samples])
            for j, i in enumerate(images)])                                    # (images * samples,)
        baseline = None
        if training.self_critical_baseline == Baseline.GREEDY:
            greedy = decode(decoder, image_features, GREEDY)
            baseline = [scorer.scores(train_vectors[i], caption_ids([c]))[0]
                        for i, c in zip(images, greedy)]
        step(tf.constant(np.repeat(image_features, samples, 0)),
             tf.constant(caption_ids(sampled, vocab.end_id)),
             tf.constant(advantages(rewarded, samples, baseline), tf.float32))
        rewards.append(rewarded)
    return float(np.concatenate(rewards).mean())


def _document_frequencies(path, train):
    """The reward's CiderD: from `path` when an earlier visit computed it, else from the training
    references, then kept there."""
    if Path(path).is_file():
        return CiderD.load(path)
    scorer = CiderD.from_references(train.references)
    scorer.save(path)
    return scorer
