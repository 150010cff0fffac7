"""Stage 5: writing captions with a trained caption model, greedy and beam search.

Decoding is incremental: every architecture (utils.architectures) has a `start`, which reads an
image once and gives the first decoding state (an LSTM's (h, c), the Transformer's cache of
keys and values), and a `step`, which reads one word and returns the next word's probabilities,
the new state and, for a model that attends, the weights it gave each position of the grid. A
caption of L words costs L steps, where the seed projects re-run the LSTM over every padded
prefix (1 + 2 + ... + L steps) and call `predict` once per word and image. Every image of a
batch, and every beam of every image, goes through one step together, and the whole search is
one compiled graph (utils.search): one call from Python a batch, not one a word.

How to decode is one record, a `DecodingSetting` (beam width, length penalty, the rule against
repeated n-grams); `DEFAULT_DECODING` is the one default of notebook 05, the app and the
benchmarks. `decode` writes one `Caption` per image (its word ids, its text and, for a model that
attends, its maps) by beam search, whose width 1 is greedy search; `sample_captions` draws
captions from the model's distribution (self-critical training's samples). Both are one search
that differs only in how a step's words are chosen. An `Ensemble` of several trained models
decodes as one model does.
"""
import re
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from .search import BAD_ENDINGS, SearchKind, compiled_search

__all__ = ["DecodingSetting", "DEFAULT_DECODING", "CaptionDecoder", "Ensemble", "ROWS_PER_STEP", "Caption",
           "EMPTY_CAPTION", "shown_caption", "decode", "sample_captions", "bad_endings",
           "caption_ids", "floored_log", "EpochReport"]


@dataclass(frozen=True)
class DecodingSetting:
    """How captions are written. Width 1 is greedy search (its length penalty is irrelevant, so
    it is kept at 0). The defaults are the best measured on Flickr8k's dev split (docs/results.md)."""
    beam_width: int = 5           # partial captions kept per image; 1: greedy
    length_penalty: float = 1.0   # 0: summed log-probability (favours short captions); 1: per word
    no_repeat_ngram: int = 2      # no n-gram twice in one caption; 0: no such rule

    def __post_init__(self):
        if self.beam_width < 1 or self.length_penalty < 0 or self.no_repeat_ngram < 0:
            raise ValueError(f"not a decoding setting: {self}")
        if self.beam_width == 1:
            object.__setattr__(self, "length_penalty", 0.0)

    @property
    def label(self):
        """A name for tables and results files: "beam 5, length penalty 1, no repeated 2-gram"."""
        label = "greedy" if self.beam_width == 1 else f"beam {self.beam_width}"
        if self.length_penalty:
            label += f", length penalty {self.length_penalty:g}"
        return label + (f", no repeated {self.no_repeat_ngram}-gram" if self.no_repeat_ngram else "")

    @property
    def slug(self):
        """The setting written as a key of stored results and in file names: "beam5-lp1-nr2",
        "greedy-nr2"; `from_slug` reads it back."""
        slug = "greedy" if self.beam_width == 1 else f"beam{self.beam_width}"
        if self.length_penalty:
            slug += f"-lp{self.length_penalty:g}"
        return slug + (f"-nr{self.no_repeat_ngram}" if self.no_repeat_ngram else "")

    @property
    def search(self):
        """The compiled search that writes captions so (utils.search)."""
        return SearchKind(self.beam_width, length_penalty=self.length_penalty,
                          no_repeat_ngram=self.no_repeat_ngram)

    @classmethod
    def from_slug(cls, slug):
        found = re.fullmatch(r"(?:greedy|beam(\d+))(?:-lp([\d.]+))?(?:-nr(\d+))?", slug)
        if not found:
            raise ValueError(f"{slug!r} is not a decoding setting's slug, such as 'beam5-lp1-nr2'")
        width, penalty, ngram = found.groups()
        return cls(int(width or 1), float(penalty or 0), int(ngram or 0))


DEFAULT_DECODING = DecodingSetting()


def floored_log(probs):
    """Log-probabilities of probabilities, those under 1e-12 floored there: a probability that
    underflows to zero (the sharpest models') still ranks, and no score becomes -inf."""
    return tf.math.log(tf.maximum(probs, 1e-12))


class CaptionDecoder:
    """A trained caption model's `start` and `step` (utils.architectures) as decoding calls them:
    tensors in, tensors out, eagerly (notebook 05's one-word-at-a-time loop) or traced into a
    compiled search (utils.search).

    `start(features)` gives what every step reads of the images (`context`: the projected image;
    for attention the standardised grid and its attention keys; for the Transformer each block's
    memory keys and values) and the first decoding state (utils.architectures.base), sized for
    the vocabulary's longest caption; `step(context, words, state)` gives the next word's
    log-probabilities, the new state, and the attention weights over the grid that chose it
    (None for models that do not attend). Built on the model's own weights: it decodes with them
    as they are (during training too)."""

    def __init__(self, model, vocab):
        self.model, self.vocab, self.attends = model, vocab, model.attends

    def start(self, features):
        """(context, state) for a batch of feature vectors (or grids): tuples of tensors."""
        context, state = self.model.start(tf.cast(features, tf.float32), self.vocab.max_length + 1)
        return tuple(context), tuple(state)

    def step(self, context, words, state):
        """Log-probabilities of the next word [B, V], the new state, and the attention weights
        [B, positions] (None without attention)."""
        probs, state, weights = self.model.step(context, tf.cast(words, tf.int32), state)
        return floored_log(probs), tuple(state), weights


class Ensemble:
    """Several trained models decoding as one: each keeps its own context and state, and at each
    step their next-word probabilities are averaged (probabilities, not log-probabilities: a word
    one member rules out is not ruled out), the ensemble of caption models since Vinyals et al.
    2015. It decodes wherever a CaptionDecoder does, the members' steps inside one compiled search.
    The members must share the vocabulary, which is checked here. Members may read different
    features of the same photos (another encoder's): `reads` gives each member's table, an index
    into the tables the ensemble's input holds side by side on its last axis (`table_widths`
    values each); without it every member reads the one table. utils.load_decoder groups runs
    into tables by their records. Attention maps are not averaged: an ensemble gives none."""
    attends = False

    def __init__(self, decoders, reads=None, sources=None):
        """`sources`: what made each table (the runs' FeatureSources), where they are known."""
        self.members, self.vocab, self.sources = tuple(decoders), decoders[0].vocab, sources
        if any(member.vocab != self.vocab for member in self.members):
            raise ValueError("an ensemble's models must share one vocabulary")
        self.reads = tuple(reads or [0] * len(self.members))
        widths = {}  # each table's width: the feature size of the members that read it
        for member, table in zip(self.members, self.reads):
            width = member.model.config.feature_dim
            if widths.setdefault(table, width) != width:
                raise ValueError(f"members reading table {table} differ in feature size")
        if sorted(widths) != list(range(len(widths))):
            raise ValueError(f"reads {self.reads}: tables must be numbered 0, 1, ... in order")
        self.table_widths = tuple(widths[t] for t in range(len(widths)))

    def start(self, features):
        """(contexts, states): each member's own, in member order, from its own table."""
        tables = tf.split(features, self.table_widths, axis=-1)  # [B, ..., width] each
        starts = [member.start(tables[table]) for member, table in zip(self.members, self.reads)]
        return tuple(context for context, _ in starts), tuple(state for _, state in starts)

    def step(self, contexts, words, states):
        """The log of the members' mean next-word probability [B, V], their new states, None.
        The members' probabilities are averaged as they come from their heads: one logarithm
        a step, not one a member and an exponential to undo it (a fifth of an ensemble's time)."""
        steps = [member.model.step(context, tf.cast(words, tf.int32), state)
                 for member, context, state in zip(self.members, contexts, states)]
        mean = tf.add_n([probs for probs, _, _ in steps]) / len(steps)     # (B, V)
        return floored_log(mean), tuple(tuple(state) for _, state, _ in steps), None



# Beams stepped together (images x beam width): bounds the memory of one step, large enough
# that the step's fixed cost is shared by many images.
ROWS_PER_STEP = 320


# What is shown for a caption of no words: a model may say <end> first, a legitimate output that
# would otherwise show as nothing at all (a blank heading, an empty line).
EMPTY_CAPTION = "(no words: the model ended the caption at once)"


def shown_caption(text):
    """A caption's words as a person reads them: EMPTY_CAPTION for none."""
    return text or EMPTY_CAPTION


@dataclass(frozen=True)
class Caption:
    """One written caption. Captions compare by their words; `maps` are not compared."""
    ids: tuple          # word ids, without <start> and <end>
    text: str           # the words, as the vocabulary spells them ("" for none: see `shown`)
    # Attention weights over the grid of each word and of <end> [words + 1, positions], each row
    # summing to one; None for a model that does not attend.
    maps: np.ndarray | None = field(default=None, compare=False, repr=False)
    # What the search ranked it by: beam search's summed log-probability / length ** length
    # penalty, sampling's summed log-probability; None where no search wrote it.
    score: float | None = field(default=None, compare=False)

    @property
    def shown(self):
        """The caption as displayed: its words, or EMPTY_CAPTION."""
        return shown_caption(self.text)


def decode(decoder, features, setting=DEFAULT_DECODING, images_per_batch=None):
    """One `Caption` per image of `features` (feature vectors, or grids), written as `setting`
    says, `images_per_batch` images a call of the compiled search (default: ROWS_PER_STEP beams a
    step).

    Beam search keeps each image's `beam_width` partial captions ranked by their summed
    log-probability. A beam that emits <end> is finished: it stays in the beam with its score
    frozen (it can only be followed by padding, at no cost), so it competes with the open ones
    until a better caption pushes it out. The winner is the highest score divided by
    length ** `length_penalty` (0 = raw log-probability, which favours short captions; 1 = mean
    per word), where length counts the words and the <end> token. With `no_repeat_ngram` n > 0,
    no beam repeats one of its n-grams. A caption never says <pad>, <start> or <unk>, and one
    still open after `max_length` words gets its <end> there. Greedy search is width 1."""
    per_batch = images_per_batch or max(1, ROWS_PER_STEP // setting.beam_width)
    captions = []
    for first in range(0, len(features), per_batch):  # features: an array, or FeatureRows
        batch = np.asarray(features[first:first + per_batch], "float32")
        search = compiled_search(decoder, setting.search, batch.shape[1:])
        captions += _captions(search(batch, _NO_SEED), decoder.vocab)
    return captions


# The seed of a search that draws nothing (beam search).
_NO_SEED = np.zeros(2, "int64")


def sample_captions(decoder, features, samples, rng):
    """`samples` captions of each image drawn from the model's own distribution, word by word,
    all in one batch (an image's samples consecutive): the search with each row drawing its next
    word (the Gumbel-max trick) instead of keeping the best beams. As decoding does, a caption
    never says <pad>, <start> or <unk> and ends at `max_length` words; it never ends on a
    BAD_ENDINGS word. `rng`: a numpy Generator, the one source of randomness (it gives the
    search's seed)."""
    kind = SearchKind(samples, sample=True, avoid_bad_endings=True)
    features = np.asarray(features, "float32")
    search = compiled_search(decoder, kind, features.shape[1:])
    return _captions(search(features, rng.integers(2 ** 62, size=2)), decoder.vocab)


def _captions(found, vocab):
    """A search's rows (ids [m, steps], maps [m, steps, P], scores [m]) as Captions: each its words
    up to <end>, for a model that attends the maps of its words and <end>, and its score."""
    sequences, seen, scores = (x.numpy() for x in found)
    captions = []
    for sequence, maps, score in zip(sequences, seen, scores):
        ids = tuple(int(i) for i in sequence[:np.argmax(sequence == vocab.end_id)])
        captions.append(Caption(ids, vocab.decode(ids), maps[:len(ids) + 1] if maps.shape[1] else None,
                                float(score)))
    return captions


def bad_endings(captions):
    """How many of `captions` (texts) end on a BAD_ENDINGS word."""
    return sum(bool(text.split()) and text.split()[-1] in BAD_ENDINGS for text in captions)


def caption_ids(captions, end_id=None):
    """Captions' word ids as one array [captions, longest + 1], 0 after the last word; with
    `end_id`, <end> after each caption's words (what the model was asked to say)."""
    ids = np.zeros((len(captions), max((len(c.ids) for c in captions), default=0) + 1), "int32")
    for row, caption in enumerate(captions):
        ids[row, :len(caption.ids)] = caption.ids
        if end_id is not None:
            ids[row, len(caption.ids)] = end_id
    return ids


class EpochReport(keras.callbacks.Callback):
    """What training shows: one line per epoch (loss, validation loss, the epoch's learning rate,
    seconds), then the captions of a few fixed images, written by `decode` as notebook 05 writes
    them, so that the reader watches them improve (the TensorFlow tutorial's GenerateText)."""

    def __init__(self, vocab, names, features, setting=DEFAULT_DECODING):
        super().__init__()
        self.vocab, self.names, self.features, self.setting = vocab, names, features, setting

    def on_train_begin(self, logs=None):
        # Built on the model's own layers: it decodes with the weights of the moment.
        self.decoder = CaptionDecoder(self.model, self.vocab)

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        self.learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        print(f"epoch {epoch + 1}: loss {logs['loss']:.3f}, validation loss {logs['val_loss']:.3f}, "
              f"learning rate {self.learning_rate:.2g}, {seconds:.1f} s")
        self.print_captions()

    def print_captions(self):
        """The shown images' captions by the model's weights of the moment."""
        for name, caption in zip(self.names, decode(self.decoder, self.features, self.setting)):
            print(f"    {name}: {caption.shown}")
