"""The one search every caption is written by, as one compiled TensorFlow graph.

Every image's `rows` partial captions (row r of image i is i * rows + r) step together through a
`tf.while_loop` of at most the vocabulary's `max_length` words and <end>, and everything a step
does is a tensor operation: the model's step (utils.decoding's CaptionDecoder or Ensemble), the
rules that rule out what a caption cannot say, the choice of each row's next word, and the
bookkeeping of words, attention maps, scores and finished rows, all in tensors of one shape from
the first step to the last. Two ways of choosing a step's words:

    beam search   each image keeps its `rows` best continuations of its rows (width 1: greedy
                  search); the winner is the best score divided by length ** length_penalty
    sampling      each row draws its next word from the model's distribution (the Gumbel-max
                  trick), as self-critical training samples captions

Nothing here leaves the graph, so a search runs as one call from Python, inside an exported
SavedModel (utils.export_captioner) too. tests/decoding_oracle.py keeps the search as it was
written before, one Python iteration a word in numpy, and the tests check that both write the
same captions.
"""
import weakref
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

__all__ = ["SEARCH_JIT", "BAD_ENDINGS", "SearchKind", "compiled_search", "gumbel_noise"]

# Compile the search with XLA (jit_compile). Off: on a CPU the while loop of small steps does not
# gain from it, and XLA's fused arithmetic could break ties otherwise than the TF kernels do
# (benchmarks/decoding.py measures both).
SEARCH_JIT = False

# Words a caption cannot end on; self-critical training rewards such captions ("a dog runs on
# the") unless <end> is ruled out after them (self-critical.pytorch's list).
BAD_ENDINGS = ("a", "an", "the", "in", "for", "at", "of", "with", "before", "after", "on", "upon",
               "near", "to", "is", "are", "am")


@dataclass(frozen=True)
class SearchKind:
    """What a compiled search does (one graph each)."""
    rows: int                       # partial captions an image: the beam width, or samples
    sample: bool = False            # draw each row's next word, else keep each image's best rows
    length_penalty: float = 0.0     # beam search: the winner's score / length ** this
    no_repeat_ngram: int = 0        # no n-gram twice in one caption; 0: no such rule
    avoid_bad_endings: bool = False  # no caption ends on a BAD_ENDINGS word
    jit: bool = SEARCH_JIT          # compiled by XLA


# Each decoder's compiled searches, by (kind, one image's feature shape): traced once each.
_COMPILED = weakref.WeakKeyDictionary()


def compiled_search(decoder, kind, image_shape):
    """The search `kind` of `decoder` as one tf.function (features [n, *image_shape], seed [2])
    -> (ids [m, steps], maps [m, steps, positions], scores [m]): beam search gives each image's
    winner (m = n; its score per length ** length_penalty), sampling every row (m = n * rows; its
    summed log-probability). A row's ids are its words, <end>, then padding; maps are the
    attention weights that chose each (zero positions for a model that does not attend)."""
    searches = _COMPILED.setdefault(decoder, {})
    key = (kind, tuple(image_shape))
    if key not in searches:
        spec = (tf.TensorSpec((None, *image_shape), tf.float32), tf.TensorSpec((2,), tf.int64))
        searches[key] = tf.function(_search_graph(decoder, kind), input_signature=spec,
                                    jit_compile=kind.jit, autograph=False)
    return searches[key]


def gumbel_noise(shape, seed, t):
    """Step t's Gumbel noise [shape] (float64) from `seed` [2]: argmax(log p + noise) draws a word
    with probability p, and the same seed draws the same words."""
    step_seed = tf.stack([seed[0], seed[1] + tf.cast(t, tf.int64)])
    uniform = tf.random.stateless_uniform(shape, step_seed, dtype=tf.float64)
    return -tf.math.log(-tf.math.log(uniform))


def _search_graph(decoder, kind):
    """The search as a function of tensors, for tf.function to trace."""
    vocab, rows = decoder.vocab, kind.rows
    steps = vocab.max_length + 1  # at most max_length words, then <end>
    word_ids = tf.range(len(vocab))
    never = _one_of(word_ids, [vocab.pad_id, vocab.start_id, vocab.unk_id])     # (V,)
    is_end = tf.equal(word_ids, vocab.end_id)
    bad = _one_of(word_ids, [vocab.index[w] for w in BAD_ENDINGS if w in vocab.index])
    carried_over = tf.where(tf.equal(word_ids, vocab.pad_id), 0.0, -np.inf)    # a finished row's
    # Beam search: identical beams start as one, the others at -inf until the first step.
    first_scores = tf.constant([0.0] + [0.0 if kind.sample else -np.inf] * (rows - 1), tf.float64)

    def rule_out(log_probs, t, last_words, sequences, done):
        """What a caption cannot say next: never <pad> or <start>, never <unk> (a rare word the
        model cannot name, which matches no reference: the next likeliest word is said instead),
        and after `max_length` words anything but <end>; then the rules `kind` asks for. A
        finished row can only be followed by padding, at no cost."""
        log_probs = tf.where(never | ((t == vocab.max_length) & ~is_end), -np.inf, log_probs)
        if kind.avoid_bad_endings:  # no <end> after a bad ending; none as the last word
            ends_badly = tf.gather(bad, last_words)[:, None] & is_end & (t < vocab.max_length)
            log_probs = tf.where(ends_badly | ((t == vocab.max_length - 1) & bad), -np.inf,
                                 log_probs)
        if kind.no_repeat_ngram:
            log_probs = _rule_out_repeated_ngrams(log_probs, sequences, t, kind.no_repeat_ngram)
        return tf.where(done[:, None], carried_over, log_probs)

    def keep_best(scores, log_probs, t, seed):
        """Each image's `rows` best continuations of its rows: (parent rows, words, scores);
        of equal scores the lower index first (top_k's order, a stable sort's)."""
        size = len(vocab)
        total = tf.reshape(scores[:, None] + tf.cast(log_probs, tf.float64), (-1, rows * size))
        best_scores, best = tf.math.top_k(total, rows)                           # (n, rows)
        parents = tf.range(tf.shape(total)[0])[:, None] * rows + best // size
        return tuple(tf.reshape(x, (-1,)) for x in (parents, best % size, best_scores))

    def draw(scores, log_probs, t, seed):
        """Each row's next word drawn from its distribution: (None: each row its own parent,
        words, scores)."""
        log_probs = tf.cast(log_probs, tf.float64)
        words = tf.math.top_k(log_probs + gumbel_noise(tf.shape(log_probs), seed, t), 1)[1][:, 0]
        return None, words, scores + tf.gather(log_probs, words, batch_dims=1)

    choose = draw if kind.sample else keep_best

    def search(features, seed):
        images = tf.shape(features)[0]
        count = images * rows
        context, state = decoder.start(features)
        context, state = tf.nest.map_structure(lambda x: tf.repeat(x, rows, axis=0),
                                               (context, state))  # each image once per row
        positions = features.shape[1] if decoder.attends else 0

        def step(t, words, sequences, seen, scores, done, state):
            log_probs, state, weights = decoder.step(context, words, state)      # (N, V)
            log_probs = rule_out(log_probs, t, words, sequences, done)
            parents, words, scores = choose(scores, log_probs, t, seed)
            if parents is not None:  # the rows kept carry their parents' past on
                sequences, seen, done, state = tf.nest.map_structure(
                    lambda x: tf.gather(x, parents), (sequences, seen, done, state))
                weights = None if weights is None else tf.gather(weights, parents)
            here = tf.equal(tf.range(steps), t)                                  # (steps,)
            sequences = tf.where(here, words[:, None], sequences)                # (N, steps)
            if weights is not None:  # the weights that chose each word
                seen = tf.where(here[:, None], weights[:, None], seen)           # (N, steps, P)
            return (t + 1, words, sequences, seen, scores,
                    done | tf.equal(words, vocab.end_id), tuple(state))

        def unfinished(t, words, sequences, seen, scores, done, state):
            return (t < steps) & ~tf.reduce_all(done)

        _, _, sequences, seen, scores, _, _ = tf.while_loop(
            unfinished, step, (tf.constant(0), tf.fill((count,), vocab.start_id),
                   tf.zeros((count, steps), tf.int32),
                   tf.zeros((count, steps, positions), tf.float32),
                   tf.tile(first_scores, [images]), tf.zeros((count,), tf.bool), state))
        if kind.sample:
            return sequences, seen, scores
        # Each image's winner: the best score per length ** length_penalty, where a caption's
        # length counts its words and <end>.
        lengths = tf.math.count_nonzero(sequences != vocab.pad_id, axis=1, dtype=tf.float64)
        normalised = scores / lengths ** kind.length_penalty                    # (N,)
        winners = tf.math.top_k(tf.reshape(normalised, (-1, rows)), 1)[1][:, 0]  # (n,)
        chosen = tf.range(images) * rows + winners
        return tuple(tf.gather(x, chosen) for x in (sequences, seen, normalised))

    return search


def _one_of(ids, chosen):
    """[V] bool: which of `ids` are in `chosen`."""
    return tf.reduce_any(tf.equal(ids[:, None], tf.constant(chosen, tf.int32)[None]), axis=1) \
        if chosen else tf.zeros_like(ids, tf.bool)


def _rule_out_repeated_ngrams(log_probs, sequences, t, n):
    """No n-gram twice in one caption: the likeliest fault of a small model is to loop back on
    itself ("a man in a boat and a boat"), which reads badly and matches no reference. A word that
    would close an n-gram already in the caption (its first t words) is ruled out; <end> never is
    (a live caption has not said it), so every caption can still finish."""
    starts = sequences.shape[1] - n + 1  # where an n-gram can start
    if starts <= 0:
        return log_probs
    following = sequences[:, n - 1:]                     # (N, starts): each n-gram's last word
    said = tf.range(starts) <= t - n                     # (starts,): n-grams wholly said
    if n > 1:  # ... whose first n - 1 words are the caption's last n - 1
        tail = tf.gather(sequences, tf.maximum(t - n + 1 + tf.range(n - 1), 0), axis=1)
        frames = tf.signal.frame(sequences, n - 1, 1, axis=1)[:, :starts]     # (N, starts, n-1)
        said = said & tf.reduce_all(tf.equal(frames, tail[:, None]), axis=-1)  # (N, starts)
    said = tf.broadcast_to(said, tf.shape(following))
    rows = tf.broadcast_to(tf.range(tf.shape(following)[0])[:, None], tf.shape(following))
    at = tf.reshape(tf.stack([rows, following], axis=-1), (-1, 2))
    return tf.tensor_scatter_nd_min(
        log_probs, at, tf.reshape(tf.where(said, -np.inf, np.inf), (-1,)))
