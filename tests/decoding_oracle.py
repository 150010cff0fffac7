"""The search as it was written before it was compiled (utils.search): one Python iteration a
word, its beams, rules and bookkeeping in numpy, the model's start and step each a tf.function.
The tests check that the compiled search writes the same captions, token for token."""
from functools import partial

import numpy as np
import tensorflow as tf

import utils


def beam_search(decoder, features, setting):
    """Each image's caption by beam search (width 1: greedy), as utils.decode writes it: ids."""
    k = setting.beam_width

    def keep_best(scores, log_probs, t):
        """Each image's k best continuations of its k beams: (parent rows, words, scores)."""
        n, size = len(scores) // k, log_probs.shape[1]
        total = (scores[:, None] + log_probs).reshape(n, -1)                 # (n, k * V)
        best = np.argsort(-total, axis=1, kind="stable")[:, :k]              # (n, k)
        parents = (np.arange(n)[:, None] * k + best // size).ravel()         # (n * k,) rows
        scores = np.take_along_axis(total, best, axis=1).ravel()             # (n * k,)
        return None if k == 1 else parents, (best % size).ravel(), scores

    first_scores = np.array([0.0] + [-np.inf] * (k - 1))
    sequences, seen, scores = search(decoder, features, k, first_scores, keep_best,
                                     setting.no_repeat_ngram)
    lengths = (sequences != decoder.vocab.pad_id).sum(1)  # the words and <end>
    normalised = (scores / lengths ** setting.length_penalty).reshape(-1, k)  # (n, k)
    rows = np.arange(len(normalised)) * k + normalised.argmax(1)
    return [caption(sequences, seen, row, decoder.vocab) for row in rows]


def sample_captions(decoder, features, samples, seed):
    """`samples` captions of each image drawn word by word with utils.search's Gumbel noise."""
    def draw(scores, log_probs, t):
        noise = utils.gumbel_noise(log_probs.shape, tf.constant(seed, tf.int64), t).numpy()
        words = (log_probs + noise).argmax(1)
        return None, words, scores + log_probs[np.arange(len(words)), words]

    sequences, seen, _ = search(decoder, features, samples, np.zeros(samples), draw, 0, True)
    return [caption(sequences, seen, row, decoder.vocab) for row in range(len(sequences))]


def search(decoder, features, rows, first_scores, choose, no_repeat_ngram, avoid_bad_endings=False):
    """`rows` partial captions an image, stepped together, each step's words chosen by
    `choose(scores, log_probs, t) -> (parent rows or None, words, scores)`."""
    vocab = decoder.vocab
    start = tf.function(decoder.start, autograph=False)
    step = tf.function(decoder.step, autograph=False)
    context, state = start(tf.constant(features))
    count = len(features) * rows
    context, state = tf.nest.map_structure(lambda x: tf.repeat(x, rows, axis=0), (context, state))
    words = np.full(count, vocab.start_id, "int32")                            # (N,)
    sequences = np.zeros((count, 0), "int32")                                  # (N, t)
    seen = None                                     # attention of each row's words (N, t, P)
    scores = np.tile(first_scores, len(features))
    done = np.zeros(count, bool)
    for t in range(vocab.max_length + 1):
        log_probs, state, weights = step(context, tf.constant(words), state)
        log_probs = log_probs.numpy()                                          # (N, V)
        if avoid_bad_endings:
            rule_out_bad_endings(log_probs, words, t, vocab)
        rule_out_impossible_words(log_probs, t, vocab)
        rule_out_repeated_ngrams(log_probs, sequences, ~done, no_repeat_ngram)
        log_probs[done] = -np.inf
        log_probs[done, vocab.pad_id] = 0.0  # a finished row carries over unchanged
        parents, words, scores = choose(scores, log_probs, t)
        words = words.astype("int32")
        if parents is None:  # every row its own parent
            parents = np.arange(count)
        else:
            state = tf.nest.map_structure(partial(tf.gather, indices=parents), state)
        sequences = np.concatenate([sequences[parents], words[:, None]], 1)  # (N, t + 1)
        if weights is not None:  # the weights that chose each new word come from its parent's step
            chosen = weights.numpy()[parents][:, None]                       # (N, 1, P)
            seen = chosen if seen is None else np.concatenate([seen[parents], chosen], 1)
        done = done[parents] | (words == vocab.end_id)
        if done.all():
            break
    return sequences, seen, scores


def caption(sequences, seen, row, vocab):
    """Row `row` as a utils.Caption: its words up to <end>, and their maps."""
    sequence = sequences[row]
    ids = tuple(int(i) for i in sequence[:np.argmax(sequence == vocab.end_id)])
    maps = None if seen is None else seen[row, :len(ids) + 1]  # its words and <end>
    return utils.Caption(ids, vocab.decode(ids), maps)


def rule_out_impossible_words(log_probs, t, vocab):
    log_probs[:, [vocab.pad_id, vocab.start_id, vocab.unk_id]] = -np.inf
    if t == vocab.max_length:
        end = log_probs[:, vocab.end_id].copy()
        log_probs[:] = -np.inf
        log_probs[:, vocab.end_id] = end


def rule_out_bad_endings(log_probs, last_words, t, vocab):
    bad = [vocab.index[w] for w in utils.BAD_ENDINGS if w in vocab.index]
    if t < vocab.max_length:
        log_probs[np.isin(last_words, bad), vocab.end_id] = -np.inf
    if t == vocab.max_length - 1:  # the last word a caption has room for: <end> follows it
        log_probs[:, bad] = -np.inf


def rule_out_repeated_ngrams(log_probs, sequences, live, n):
    if not n or sequences.shape[1] < n - 1:
        return
    for b in np.flatnonzero(live):
        caption = sequences[b]
        tail = tuple(caption[len(caption) - n + 1:])
        for i in range(len(caption) - n + 1):
            if tuple(caption[i:i + n - 1]) == tail:
                log_probs[b, caption[i + n - 1]] = -np.inf
