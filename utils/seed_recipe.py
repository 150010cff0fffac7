"""The seed projects' formulation of training, kept to compare ours with (tests, benchmarks).

The seed projects train the merge model on one sample per caption prefix: every prefix of every
caption, pre-padded, predicts the word after it. Because the LSTM is causal, running it once over
the whole caption (`CaptionModel.call`) gives the same prediction for every prefix at once, for
every architecture: one pass per caption instead of one per word. `prefix_model` wraps a caption
model, sharing its weights, to predict as the seed projects do; `expand_prefixes` makes their
samples. tests/test_model.py checks the two agree; benchmarks/training.py measures the speed.
"""
import keras
import numpy as np
from keras import ops

__all__ = ["PrefixModel", "prefix_model", "expand_prefixes"]


class PrefixModel(keras.Model):
    """The seed projects' formulation with a caption model's layers and weights: (features,
    pre-padded prefix [B, prefix_length]) -> next-word probabilities [B, V]. The caption models
    read captions padded after their words, so each prefix is turned round into that (its words
    first), and only what the head reads after its last word goes through the head, as in theirs."""

    def __init__(self, model, prefix_length, **kwargs):
        super().__init__(**kwargs)
        self.model, self.prefix_length = model, prefix_length

    def call(self, inputs, training=False):
        image, prefix = inputs
        length = self.prefix_length
        words = ops.sum(ops.cast(ops.not_equal(prefix, 0), "int32"), axis=1, keepdims=True)  # (B, 1)
        # Position i of the caption is position i + (padding) of the prefix, modulo its length.
        order = (ops.arange(length)[None] + length - words) % length             # (B, L)
        read = self.model.read((image, ops.take_along_axis(prefix, order, axis=1)),
                               training=training)                                # (B, L, D)
        last = ops.expand_dims(ops.maximum(words - 1, 0), -1)                    # (B, 1, 1)
        return self.model.head(ops.take_along_axis(read, last, axis=1)[:, 0])   # (B, V)


def prefix_model(model, prefix_length):
    """`model` as the seed projects' formulation (a PrefixModel), sharing its weights."""
    return PrefixModel(model, prefix_length)


def expand_prefixes(tokens, prefix_length):
    """The seed projects' training samples: for every caption each prefix, pre-padded to
    `prefix_length`, and the word that follows it. Returns (prefixes, next words, caption index)."""
    prefixes, targets, owners = [], [], []
    for i, caption in enumerate(tokens):
        ids = caption[caption > 0]
        for t in range(1, len(ids)):
            padded = np.zeros(prefix_length, "int32")
            padded[prefix_length - t:] = ids[:t]
            prefixes.append(padded)
            targets.append(ids[t])
            owners.append(i)
    return np.array(prefixes, "int32"), np.array(targets, "int32"), np.array(owners)
