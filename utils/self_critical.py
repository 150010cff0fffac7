"""Stage 4, second phase: self-critical sequence training (Rennie et al. 2017), for every
architecture.

Cross-entropy teaches the next word after the reference's prefix; captions are then written from
the model's own prefixes and judged by CIDEr-D. This phase closes the gap: it samples captions of
each training image through the decoder's one `step`, rewards each by its CIDEr-D against the
image's references, and raises the log-probability of the captions rewarded above a baseline
(REINFORCE), lowering the others'.

    reward      `CiderD`: pycocoevalcap's CIDEr-D, n-grams counted with numpy on word ids, with
                the document frequencies of the *training* references (the evaluation takes them
                from the evaluated images, right for a score, wrong for a reward), computed once
                and kept in the run folder
    baseline    "samples" (the default, "new self-critical"): the mean reward of the image's other
                samples; "greedy": the reward of the image's greedy caption (Rennie et al.)
    sampling    every sample of every image in one batched pass, <end> ruled out after a word a
                caption cannot end on (BAD_ENDINGS, self-critical.pytorch's remove_bad_endings)
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

from .decoding import CaptionDecoder, DecodingSetting, _rule_out_impossible_words, decode
from .files import atomic_path, read_json, write_json
from .training import WEIGHTS_FILE

__all__ = ["BAD_ENDINGS", "CROSS_ENTROPY_WEIGHTS", "DOCUMENT_FREQUENCIES", "BASELINES",
           "ImageReferences", "CiderD", "sample_captions", "advantages", "reinforce_step",
           "bad_endings",
           "self_critical_started", "self_critical_finished", "read_self_critical_history",
           "train_self_critical"]

# Words a caption cannot end on; self-critical training rewards such captions ("a dog runs on
# the") unless <end> is ruled out after them (self-critical.pytorch's list).
BAD_ENDINGS = ("a", "an", "the", "in", "for", "at", "of", "with", "before", "after", "on", "upon",
               "near", "to", "is", "are", "am")
CROSS_ENTROPY_WEIGHTS = "cross_entropy.weights.h5"  # the first phase's best, kept
DOCUMENT_FREQUENCIES = "cider_document_frequencies.npz"  # the reward's, from the training split
HISTORY_FILE = "self_critical.json"  # one row per epoch, epoch 0 the cross-entropy model
CHECKPOINT_FILE = "self_critical_checkpoint.npz"  # while the phase runs; removed when it ends
BASELINES = ("samples", "greedy")
GREEDY = DecodingSetting(1, 0.0, 0)  # how the dev captions that select the epoch are written

ORDERS = 4       # CIDEr-D's n-grams: 1 to 4 words
SIGMA = 6.0      # CIDEr-D's length penalty: a Gaussian of this width on the length difference
_ID_BITS = 15    # bits of one word id in an n-gram's key: vocabularies up to 32,768 words
_ORDER_SHIFT = ORDERS * _ID_BITS  # the key's top bits say how many words it has


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


def ngram_keys(words):
    """[N, 4, L] int64: the key of the n-gram of n + 1 words starting at each position of each
    caption (word ids [N, L], 0 after the last word), -1 where it runs past the caption's words.
    One key per distinct n-gram of any order: counting them is numpy's `unique`."""
    words = np.asarray(words, np.int64)
    if words.size and words.max() >= 1 << _ID_BITS:
        raise ValueError(f"word id {words.max()} does not fit CIDEr-D's n-gram keys "
                         f"({1 << _ID_BITS} words at most)")
    keys = np.full((len(words), ORDERS, words.shape[1]), -1, np.int64)
    key, whole = np.zeros(words.shape, np.int64), np.ones(words.shape, bool)
    for n in range(ORDERS):
        shifted = np.zeros_like(words)
        shifted[:, :max(words.shape[1] - n, 0)] = words[:, n:]  # none: a caption of < n words
        key |= shifted << (_ID_BITS * n)
        whole &= shifted > 0
        keys[:, n] = np.where(whole, key | (n << _ORDER_SHIFT), -1)
    return keys


def _counts(keys):
    """(distinct keys, their counts) of one caption's `ngram_keys`."""
    return np.unique(keys[keys >= 0], return_counts=True)


def _find(sorted_keys, keys):
    """(where each of `keys` is or would go in `sorted_keys`, clamped to a valid index; whether
    it is there)."""
    at = np.minimum(np.searchsorted(sorted_keys, keys), max(len(sorted_keys) - 1, 0))
    found = sorted_keys[at] == keys if len(sorted_keys) else np.zeros(len(keys), bool)
    return at, found


@dataclass(frozen=True)
class _Vectors:
    """Captions' CIDEr-D vectors: tf-idf weights over `keys` [G] (one row per caption [C, G]),
    their norms per n-gram order [C, 4] and lengths [C]."""
    keys: np.ndarray
    weights: np.ndarray
    norms: np.ndarray
    lengths: np.ndarray


class CiderD:
    """CIDEr-D as pycocoevalcap computes it (tf-idf n-gram vectors, clipped, with a Gaussian
    length penalty; x10), with the document frequencies of one fixed set of references: a
    reward, not an evaluation. Captions are word ids; a test shows it equals pycocoevalcap's."""

    def __init__(self, keys, frequencies, images):
        self.keys, self.frequencies = np.asarray(keys, np.int64), np.asarray(frequencies)
        self.log_images = np.log(float(images))
        self.images = int(images)

    @classmethod
    def from_references(cls, references):
        """Document frequencies of `references` (per image, its captions [captions, words]): in
        how many images' references each n-gram appears."""
        per_image = [np.unique(k[k >= 0]) for k in (ngram_keys(r) for r in references)]
        keys, frequencies = np.unique(np.concatenate(per_image or [np.zeros(0, np.int64)]),
                                      return_counts=True)
        return cls(keys, frequencies, len(references))

    def save(self, path):
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, keys=self.keys, frequencies=self.frequencies, images=self.images)

    @classmethod
    def load(cls, path):
        with np.load(path, allow_pickle=False) as f:
            return cls(f["keys"], f["frequencies"], int(f["images"]))

    def _idf(self, keys):
        """log(images) - log(max(1, document frequency)) of each key."""
        at, found = _find(self.keys, keys)
        return self.log_images - np.log(np.maximum(np.where(found, self.frequencies[at], 0), 1))

    def vectors(self, captions):
        """`_Vectors` of captions (word ids [C, L]) over the distinct n-grams they hold."""
        counted = [_counts(k) for k in ngram_keys(captions)]
        keys = np.unique(np.concatenate([k for k, _ in counted] or [np.zeros(0, np.int64)]))
        weights = np.zeros((len(counted), len(keys)))
        for row, (k, n) in enumerate(counted):
            weights[row, np.searchsorted(keys, k)] = n
        lengths = weights[:, (keys >> _ORDER_SHIFT) == 1].sum(1)  # pycocoevalcap's: its bigrams
        weights *= self._idf(keys)
        order = keys >> _ORDER_SHIFT
        norms = np.sqrt(np.stack([(weights[:, order == n] ** 2).sum(1) for n in range(ORDERS)], 1))
        return _Vectors(keys, weights, norms, lengths)

    def scores(self, references, captions):
        """CIDEr-D [S] of each of `captions` [S, L] against one image's `references`: either its
        captions [R, L] or their `vectors` (computed once per image by the caller)."""
        refs = references if isinstance(references, _Vectors) else self.vectors(references)
        own = self.vectors(captions)
        # The captions' weights on the references' n-grams; others match nothing.
        at, shared = _find(refs.keys, own.keys)
        weights = np.zeros((len(captions), len(refs.keys)))
        weights[:, at[shared]] = own.weights[:, shared]                     # (S, G)
        clipped = np.minimum(weights[:, None], refs.weights[None]) * refs.weights[None]  # (S, R, G)
        orders = np.eye(ORDERS)[refs.keys >> _ORDER_SHIFT]                  # (G, 4)
        similarity = clipped @ orders                                       # (S, R, 4)
        norms = own.norms[:, None] * refs.norms[None]                       # (S, R, 4)
        similarity = np.where(norms > 0, similarity / np.where(norms > 0, norms, 1), similarity)
        delta = own.lengths[:, None] - refs.lengths[None]                   # (S, R)
        penalty = np.exp(-delta ** 2 / (2 * SIGMA ** 2))
        return (similarity * penalty[..., None]).mean(2).mean(1) * 10.0


def sample_captions(decoder, features, samples, rng):
    """`samples` captions of each image drawn from the model's own distribution, word by word,
    all in one batch: word ids [images * samples, words] (an image's samples in consecutive
    rows), each ending in <end>, then padding. As decoding does, a caption never says <pad>,
    <start> or <unk> and ends at `max_length` words; it never ends on a BAD_ENDINGS word (<end>
    is ruled out after one, and one is ruled out as the last word there is room for)."""
    vocab = decoder.vocab
    bad = np.array([vocab.index[w] for w in BAD_ENDINGS if w in vocab.index])
    context, state = decoder.start(np.repeat(np.asarray(features, "float32"), samples, 0))
    count = len(features) * samples
    words = np.full(count, vocab.start_id, "int32")
    sequences = np.zeros((count, vocab.max_length + 1), "int32")
    done = np.zeros(count, bool)
    for t in range(vocab.max_length + 1):
        log_probs, state, _ = decoder.step(context, words, state)           # (count, V)
        if t < vocab.max_length:
            log_probs[np.isin(words, bad), vocab.end_id] = -np.inf
        if t == vocab.max_length - 1:  # the last word a caption has room for: <end> follows it
            log_probs[:, bad] = -np.inf
        _rule_out_impossible_words(log_probs, t, vocab)
        words = (log_probs + rng.gumbel(size=log_probs.shape)).argmax(1).astype("int32")
        words[done] = vocab.pad_id
        sequences[:, t] = words
        done |= words == vocab.end_id
        if done.all():
            break
    return sequences[:, :t + 1]


def advantages(rewards, samples, baseline=None):
    """Each sample's reward minus its baseline [images * samples]: the mean reward of the image's
    other samples, or, given `baseline` [images] (the greedy captions' rewards), that."""
    per_image = np.asarray(rewards, float).reshape(-1, samples)             # (images, samples)
    if baseline is None:
        baseline = (per_image.sum(1, keepdims=True) - per_image) / (samples - 1)
    else:
        baseline = np.asarray(baseline, float)[:, None]
    return (per_image - baseline).ravel()


def _words_only(sequences, vocab):
    """Sampled or decoded ids with <end> and what follows it removed (0)."""
    sequences = np.asarray(sequences)
    ended = np.cumsum(sequences == vocab.end_id, axis=1) > 0
    return np.where(ended, 0, sequences)


def bad_endings(captions):
    """How many of `captions` (texts) end on a BAD_ENDINGS word."""
    return sum(bool(text.split()) and text.split()[-1] in BAD_ENDINGS for text in captions)


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
            log_probs = tf.math.log(tf.maximum(picked, 1e-12)) * real
            loss = -tf.reduce_sum(advantage[:, None] * log_probs) / tf.reduce_sum(real)
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def _ids_of(caption):
    """A decoded Caption's words as the reward reads them [1, words] (an empty one: no n-gram)."""
    return np.array([caption.ids or (0,)])


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
    references' own document frequencies, as the evaluation has them) and bad endings."""
    captions = decode(decoder, features, GREEDY)
    scores = [scorer.scores(refs, _ids_of(c))[0] for refs, c in zip(dev.references, captions)]
    return {"epoch": epoch, **logged, "dev_cider_d": round(float(np.mean(scores)), 5),
            "bad_endings": bad_endings([c.text for c in captions])}


def train_self_critical(model, vocab, features, train, dev, run_dir, training, report=None):
    """The second phase, `training.self_critical_epochs` epochs, from the first phase's best
    weights in `run_dir`; `train` and `dev` are `ImageReferences`. Keeps the epoch with the best
    dev CIDEr-D (greedy) as the run's model.weights.h5; resumes after an interruption; a finished
    phase is not run again. `report` (an EpochReport) prints the shown images' captions after
    each epoch. Returns the history: one row per epoch, epoch 0 the cross-entropy model."""
    run_dir = Path(run_dir)
    if self_critical_finished(run_dir, training):
        return read_self_critical_history(run_dir)
    if training.self_critical_baseline not in BASELINES:
        raise ValueError(f"unknown baseline {training.self_critical_baseline!r}; choose one of "
                         f"{', '.join(BASELINES)}")
    if training.self_critical_samples < 2 and training.self_critical_baseline == "samples":
        raise ValueError("the samples baseline needs at least 2 samples an image")
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
        words = _words_only(sampled, vocab)
        rewarded = np.concatenate([
            scorer.scores(train_vectors[i], words[j * samples:(j + 1) * samples])
            for j, i in enumerate(images)])                                    # (images * samples,)
        baseline = None
        if training.self_critical_baseline == "greedy":
            greedy = decode(decoder, image_features, GREEDY)
            baseline = [scorer.scores(train_vectors[i], _ids_of(c))[0]
                        for i, c in zip(images, greedy)]
        step(tf.constant(np.repeat(image_features, samples, 0)), tf.constant(sampled),
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
