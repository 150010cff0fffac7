"""The seed projects' recipe (the InceptionV3 + GloVe tutorials), the baseline of the benchmarks:
their cleaning (one-letter words dropped, words seen fewer than 10 times dropped), raw
(unstandardised) features, one training sample per caption prefix with one-hot targets and
categorical cross-entropy, and decoding by `model.predict` on the whole padded prefix for every
word of every image. Same merge architecture and layers as ours (`utils.prefix_model`), GloVe 50d
(the only GloVe here; the tutorials use 200d) and, more generous than the tutorials, the best
epoch chosen on dev loss."""
import time

import keras
import numpy as np

import utils

# The tutorials' settings.
CLEANING = {"drop_one_letter": True, "min_count": 10}
MODEL = {"units": 256, "dropout": 0.5, "train_embedding": False}  # GloVe frozen
TRAINING = {"learning_rate": 1e-3, "batch_size": 256, "epochs": 15, "patience": 2}


def train(shared, seed, epochs=None, cleaning=CLEANING):
    """(merge model, vocabulary, training seconds, epochs run) trained the seeds' way on the
    shared subset (a SharedData), its captions cleaned by `cleaning` (theirs by default)."""
    vocab, data = shared.captions(**cleaning)
    keras.utils.set_random_seed(seed)
    model = utils.build_caption_model(
        utils.ModelConfig(len(vocab), data.features.shape[1], **MODEL), shared.embedding(vocab, seed))
    prefix_length = vocab.sequence_length - 1
    prefixes = utils.prefix_model(model, prefix_length)
    prefixes.compile(keras.optimizers.Adam(TRAINING["learning_rate"]), "categorical_crossentropy")

    def samples(rows, tokens):
        prefix, next_word, owner = utils.expand_prefixes(tokens, prefix_length)
        return [data.features[rows[owner]], prefix], keras.utils.to_categorical(next_word, len(vocab))

    start = time.perf_counter()
    fit = prefixes.fit(*samples(*data.train), batch_size=TRAINING["batch_size"],
                       epochs=epochs or TRAINING["epochs"], verbose=0,
                       validation_data=samples(*data.val), callbacks=[
                           keras.callbacks.EarlyStopping(patience=TRAINING["patience"],
                                                         restore_best_weights=True)])
    return model, vocab, time.perf_counter() - start, len(fit.history["loss"])


def predict_next(prefix_model, image, ids):
    """The seeds' step: `model.predict` on the whole caption so far, pre-padded, for one image."""
    padded = np.zeros((1, prefix_model.prefix_length), "int32")
    padded[0, -len(ids):] = ids[-padded.shape[1]:]
    return prefix_model.predict([image[None], padded], verbose=0)[0]


def greedy(prefix_model, vocab, image):
    """The seeds' greedy decoding: the model re-run on the whole padded prefix for every word."""
    ids = [vocab.start_id]
    for _ in range(vocab.max_length + 1):
        word = int(predict_next(prefix_model, image, ids).argmax())
        if word == vocab.end_id:
            break
        ids.append(word)
    return ids[1:vocab.max_length + 1]


def beam(prefix_model, vocab, image, width):
    """The seeds' beam search: every beam of one image re-run from its full prefix."""
    beams = [([vocab.start_id], 0.0)]
    for _ in range(vocab.max_length + 1):
        candidates = []
        for ids, score in beams:
            if ids[-1] == vocab.end_id:
                candidates.append((ids, score))
                continue
            log_probs = np.log(predict_next(prefix_model, image, ids) + 1e-12)
            candidates += [(ids + [int(w)], score + log_probs[w])
                           for w in np.argsort(-log_probs)[:width]]
        beams = sorted(candidates, key=lambda b: -b[1])[:width]
        if all(ids[-1] == vocab.end_id for ids, _ in beams):
            break
    return beams[0][0]
