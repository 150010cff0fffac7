"""Stage 5: writing captions with a trained caption model, greedy and beam search.

Decoding is incremental: every architecture (utils.architectures) has a `start`, which reads an
image once and gives the first decoding state (an LSTM's (h, c), the Transformer's empty cache of
keys and values), and a `step`, which reads one word and returns the next word's probabilities,
the new state and, for a model that attends, the weights it gave each position of the grid. A
caption of L words costs L steps, where the seed projects re-run the LSTM over every padded
prefix (1 + 2 + ... + L steps) and call `predict` once per word and image. Every image of a
batch, and every beam of every image, goes through one step together.

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
from functools import partial

import keras
import numpy as np
import tensorflow as tf

__all__ = ["DecodingSetting", "DEFAULT_DECODING", "CaptionDecoder", "Ensemble", "Caption",
           "EMPTY_CAPTION", "shown_caption", "decode", "BAD_ENDINGS", "sample_captions",
           "bad_endings", "caption_ids", "EpochReport"]

# Words a caption cannot end on; self-critical training rewards such captions ("a dog runs on
# the") unless <end> is ruled out after them (self-critical.pytorch's list).
BAD_ENDINGS = ("a", "an", "the", "in", "for", "at", "of", "with", "before", "after", "on", "upon",
               "near", "to", "is", "are", "am")


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

    @classmethod
    def from_slug(cls, slug):
        found = re.fullmatch(r"(?:greedy|beam(\d+))(?:-lp([\d.]+))?(?:-nr(\d+))?", slug)
        if not found:
            raise ValueError(f"{slug!r} is not a decoding setting's slug, such as 'beam5-lp1-nr2'")
        width, penalty, ngram = found.groups()
        return cls(int(width or 1), float(penalty or 0), int(ngram or 0))


DEFAULT_DECODING = DecodingSetting()


class CaptionDecoder:
    """A trained caption model's `start` and `step` (utils.architectures), each traced once per
    batch shape instead of paying `predict`'s overhead at every word.

    `start(features)` gives what every step reads of the images (`context`: the projected image;
    for attention the standardised grid and its attention keys; for the Transformer each block's
    memory keys and values) and the first decoding state (utils.architectures.base);
    `step(context, words, state)` gives the next word's log-probabilities, the new state, and the
    attention weights over the grid that chose it (None for models that do not attend). Built on
    the model's own weights: it decodes with them as they are (during training too)."""

    def __init__(self, model, vocab):
        self.model, self.vocab, self.attends = model, vocab, model.attends

        def step(context, words, state):
            probs, state, weights = model.step(context, words, state)
            return keras.ops.log(keras.ops.maximum(probs, 1e-12)), state, weights

        # No AutoGraph: nothing in a step branches on a tensor, and AutoGraph cannot convert a
        # method that calls super() (init-inject's initial_state), which it says in a warning.
        self._start = tf.function(model.start, reduce_retracing=True, autograph=False)
        self._step = tf.function(step, reduce_retracing=True, autograph=False)

    def start(self, features):
        """(context, state) for a batch of feature vectors (or grids): tuples of tensors."""
        context, state = self._start(tf.constant(features, tf.float32))
        return tuple(context), tuple(state)

    def step(self, context, words, state):
        """Log-probabilities of the next word [B, V] (numpy), the new state, and the attention
        weights [B, positions] (numpy; None without attention)."""
        log_probs, state, weights = self._step(context, tf.constant(words, tf.int32), state)
        return log_probs.numpy(), tuple(state), None if weights is None else weights.numpy()


class Ensemble:
    """Several trained models decoding as one: each keeps its own context and state, and at each
    step their next-word probabilities are averaged (probabilities, not log-probabilities: a word
    one member rules out is not ruled out), the ensemble of caption models since Vinyals et al.
    2015. It decodes wherever a CaptionDecoder does. The members must share the vocabulary, which
    is checked here, and read the same features, which utils.load_decoder checks from their run
    records. Attention maps are not averaged: an ensemble gives none."""
    attends = False

    def __init__(self, decoders):
        self.members, self.vocab = tuple(decoders), decoders[0].vocab
        if any(member.vocab != self.vocab for member in self.members):
            raise ValueError("an ensemble's models must share one vocabulary")

    def start(self, features):
        """(contexts, states): each member's own, in member order."""
        starts = [member.start(features) for member in self.members]
        return tuple(context for context, _ in starts), tuple(state for _, state in starts)

    def step(self, contexts, words, states):
        """The log of the members' mean next-word probability [B, V], their new states, None."""
        steps = [member.step(context, words, state)
                 for member, context, state in zip(self.members, contexts, states)]
        log_probs = np.stack([log_probs for log_probs, _, _ in steps])       # (members, B, V)
        mean = np.logaddexp.reduce(log_probs, axis=0) - np.log(len(steps))  # (B, V)
        return mean.astype("float32"), tuple(state for _, state, _ in steps), None


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

    @property
    def shown(self):
        """The caption as displayed: its words, or EMPTY_CAPTION."""
        return shown_caption(self.text)


def decode(decoder, features, setting=DEFAULT_DECODING, images_per_batch=None):
    """One `Caption` per image of `features` (feature vectors, or grids), written as `setting`
    says, `images_per_batch` images at a time (default: ROWS_PER_STEP beams a step)."""
    per_batch = images_per_batch or max(1, ROWS_PER_STEP // setting.beam_width)
    return [caption for first in range(0, len(features), per_batch)
            for caption in _beam_search(decoder, features[first:first + per_batch], setting)]


def sample_captions(decoder, features, samples, rng):
    """`samples` captions of each image drawn from the model's own distribution, word by word,
    all in one batch (an image's samples consecutive): the search below with each row drawing its
    next word (the Gumbel-max trick) instead of keeping the best beams. As decoding does, a
    caption never says <pad>, <start> or <unk> and ends at `max_length` words; it never ends on
    a BAD_ENDINGS word. `rng`: a numpy Generator, the one source of randomness."""
    def draw(scores, log_probs):
        words = (log_probs + rng.gumbel(size=log_probs.shape)).argmax(1)
        return None, words, scores + log_probs[np.arange(len(words)), words]

    sequences, seen, _ = _search(decoder, features, samples, np.zeros(samples), draw, 0, True)
    return [_caption(sequences, seen, row, decoder.vocab) for row in range(len(sequences))]


def _beam_search(decoder, features, setting):
    """Beam search for a batch of images: every beam of every image in one step. Greedy search
    is its width 1: one beam an image, the likeliest word at each step.

    Each image keeps `beam_width` partial captions ranked by their summed log-probability. A beam
    that emits <end> is finished: it stays in the beam with its score frozen (it can only be
    followed by padding, at no cost), so it competes with the open ones until a better caption
    pushes it out. The winner is the highest score divided by length ** `length_penalty` (0 = raw
    log-probability, which favours short captions; 1 = mean per word), where length counts the
    words and the <end> token. With `no_repeat_ngram` n > 0, no beam repeats one of its n-grams.
    """
    k = setting.beam_width

    def keep_best(scores, log_probs):
        """Each image's k best continuations of its k beams: (parent rows, words, scores)."""
        n, size = len(scores) // k, log_probs.shape[1]
        total = (scores[:, None] + log_probs).reshape(n, -1)                 # (n, k * V)
        best = _best(total, k)                                               # (n, k)
        parents = (np.arange(n)[:, None] * k + best // size).ravel()         # (n * k,) rows
        scores = np.take_along_axis(total, best, axis=1).ravel()             # (n * k,)
        return None if k == 1 else parents, (best % size).ravel(), scores

    # Identical beams start as one: the others at -inf until the first step fills them.
    first_scores = np.array([0.0] + [-np.inf] * (k - 1))
    sequences, seen, scores = _search(decoder, features, k, first_scores, keep_best,
                                      setting.no_repeat_ngram)
    lengths = (sequences != decoder.vocab.pad_id).sum(1)  # the words and <end>
    normalised = (scores / lengths ** setting.length_penalty).reshape(-1, k)  # (n, k)
    return [_caption(sequences, seen, row, decoder.vocab)
            for row in np.arange(len(normalised)) * k + normalised.argmax(1)]


def _search(decoder, features, rows, first_scores, choose, no_repeat_ngram, avoid_bad_endings=False):
    """The one search every caption is written by: `rows` partial captions an image (row r of
    image i is i * rows + r), all stepped together, each step's words chosen by
    `choose(scores [N], log_probs [N, V]) -> (parent rows [N] or None: each row its own, words,
    scores)` once the rules below have ruled out what a caption cannot say. A row that emits
    <end> is finished: it is followed by padding, its score frozen. A row still open after
    `max_length` words gets its <end> there, so a model that never says <end> still gets a
    caption. An attending model's weights travel with their rows. Returns every row's ids
    [N, t] (<end>, then padding, after its words), their attention [N, t, P] or None, and their
    summed log-probabilities [N].
    """
    vocab = decoder.vocab
    context, state = decoder.start(features)  # tuples of tensors (an Ensemble's: nested)
    count = len(features) * rows
    # Every image repeated once per row.
    context, state = tf.nest.map_structure(lambda x: tf.repeat(x, rows, axis=0), (context, state))
    words = np.full(count, vocab.start_id, "int32")                            # (N,)
    sequences = np.zeros((count, 0), "int32")                                  # (N, t)
    seen = None                                     # attention of each row's words (N, t, P)
    scores = np.tile(first_scores, len(features))
    done = np.zeros(count, bool)
    for t in range(vocab.max_length + 1):
        log_probs, state, weights = decoder.step(context, words, state)      # (N, V)
        if avoid_bad_endings:
            _rule_out_bad_endings(log_probs, words, t, vocab)
        _rule_out_impossible_words(log_probs, t, vocab)
        _rule_out_repeated_ngrams(log_probs, sequences, ~done, no_repeat_ngram)
        log_probs[done] = -np.inf
        log_probs[done, vocab.pad_id] = 0.0  # a finished row carries over unchanged
        parents, words, scores = choose(scores, log_probs)
        words = words.astype("int32")
        if parents is None:  # every row its own parent
            parents = np.arange(count)
        else:
            state = tf.nest.map_structure(partial(tf.gather, indices=parents), state)
        sequences = np.concatenate([sequences[parents], words[:, None]], 1)  # (N, t + 1)
        if weights is not None:  # the weights that chose each new word come from its parent's step
            step = weights[parents][:, None]                                 # (N, 1, P)
            seen = step if seen is None else np.concatenate([seen[parents], step], 1)
        done = done[parents] | (words == vocab.end_id)
        if done.all():
            break
    return sequences, seen, scores


def _caption(sequences, seen, row, vocab):
    """Row `row` of a search's output as a Caption: its words up to <end>, and their maps."""
    sequence = sequences[row]
    ids = tuple(int(i) for i in sequence[:np.argmax(sequence == vocab.end_id)])
    maps = None if seen is None else seen[row, :len(ids) + 1]  # its words and <end>
    return Caption(ids, vocab.decode(ids), maps)


def _best(total, k):
    """The columns of the k best scores of each row, best first; of equal scores the first, as a
    stable sort ranks them. Width 1 takes the argmax, which is that, without sorting the row."""
    if k == 1:
        return total.argmax(1)[:, None]
    return np.argsort(-total, axis=1, kind="stable")[:, :k]


def _rule_out_impossible_words(log_probs, t, vocab):
    """What a caption cannot say next: never <pad> or <start>, never <unk> (a rare word the model
    cannot name, which matches no reference: the next likeliest word is said instead), and after
    `max_length` words (the vocabulary's longest caption) anything but <end>."""
    log_probs[:, [vocab.pad_id, vocab.start_id, vocab.unk_id]] = -np.inf
    if t == vocab.max_length:
        end = log_probs[:, vocab.end_id].copy()
        log_probs[:] = -np.inf
        log_probs[:, vocab.end_id] = end


def _rule_out_bad_endings(log_probs, last_words, t, vocab):
    """No caption ends on a BAD_ENDINGS word: <end> is ruled out after one, and one is ruled out
    as the last word there is room for (self-critical.pytorch's remove_bad_endings)."""
    bad = [vocab.index[w] for w in BAD_ENDINGS if w in vocab.index]
    if t < vocab.max_length:
        log_probs[np.isin(last_words, bad), vocab.end_id] = -np.inf
    if t == vocab.max_length - 1:  # the last word a caption has room for: <end> follows it
        log_probs[:, bad] = -np.inf


def _rule_out_repeated_ngrams(log_probs, sequences, live, n):
    """No n-gram twice in one caption: the likeliest fault of a small model is to loop back on
    itself ("a man in a boat and a boat"), which reads badly and matches no reference. A word that
    would close an n-gram already in the caption is ruled out; <end> never is (a live caption has
    not said it), so every caption can still finish. n = 0: no such rule."""
    if not n or sequences.shape[1] < n - 1:
        return
    for b in np.flatnonzero(live):
        caption = sequences[b]
        tail = tuple(caption[len(caption) - n + 1:])
        for i in range(len(caption) - n + 1):
            if tuple(caption[i:i + n - 1]) == tail:
                log_probs[b, caption[i + n - 1]] = -np.inf


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
