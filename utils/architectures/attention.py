"""Soft attention: Xu et al.'s "Show, Attend and Tell" (2015), which reads a grid of positions
(the CNN's last convolutional map) instead of one pooled vector.

    attention    the LSTM starts from the grid's mean and, before every word, attends over the
                 grid: a weight per position from the hidden state, the gated weighted mean of
                 the grid (the context vector) read beside the word and passed to the head

The decoding state is the LSTM's (h, c); what every step reads of an image is the standardised
grid and its attention keys, computed once an image.
"""
import keras
from keras import layers, ops

from .base import CaptionModel, architecture

__all__ = ["AttentionLSTM", "SoftAttention"]


@keras.saving.register_keras_serializable(package="utils")
class AttentionLSTM(layers.Layer):
    """An LSTM that looks at the image before every word: Xu et al.'s soft (deterministic)
    attention. `attend` weighs the grid's positions by how well each matches the hidden state (a
    softmax over positions) and returns the weighted mean of the grid, scaled by a gate the
    hidden state sets (the paper's beta); `step` reads one word beside that context vector.
    `call` runs whole captions by scanning `step`, so training and decoding compute the same
    thing. In training it adds the doubly stochastic regulariser to the model's losses: each
    position should get about as much attention over a caption's words as every other,
    (1 - its summed weights)^2, averaged over positions and captions as sgrvinod's tutorial does
    (the paper sums over positions).
    """

    def __init__(self, units, regularization=1.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.regularization = units, regularization
        self.cell = layers.LSTMCell(units, name="cell")
        self.keys = layers.Dense(units, name="keys")    # each position, once an image
        self.query = layers.Dense(units, name="query")  # the hidden state, at every word
        self.score = layers.Dense(1, name="score")
        self.gate = layers.Dense(1, activation="sigmoid", name="gate")

    def build(self, grid_shape, embedded_shape, h_shape=None, c_shape=None, real_shape=None):
        self.keys.build(grid_shape)
        self.query.build((None, self.units))
        self.score.build((None, grid_shape[1], self.units))
        self.gate.build((None, self.units))
        self.cell.build((None, embedded_shape[-1] + grid_shape[-1]))

    def compute_output_shape(self, grid_shape, embedded_shape, h_shape=None, c_shape=None,
                             real_shape=None):
        batch, length = embedded_shape[:2]
        return (batch, length, self.units), (batch, length, grid_shape[-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "regularization": self.regularization}

    def attend(self, grid, keys, h):
        """(context vector [B, D], weights [B, P]) for the grid [B, P, D] and its keys [B, P, A]."""
        scores = self.score(ops.tanh(keys + ops.expand_dims(self.query(h), 1)))  # (B, P, 1)
        weights = ops.softmax(scores[..., 0], axis=-1)                           # (B, P)
        context = ops.sum(ops.expand_dims(weights, -1) * grid, axis=1)           # (B, D)
        return self.gate(h) * context, weights

    def step(self, grid, keys, embedded, h, c):
        """One word [B, E] read: (h, c, context vector, attention weights) after it."""
        context, weights = self.attend(grid, keys, h)
        _, (h, c) = self.cell(ops.concatenate([embedded, context], axis=-1), [h, c])
        return h, c, context, weights

    def call(self, grid, embedded, h, c, real, training=False):
        """Hidden states [B, T, units] and context vectors [B, T, D] of every word; `real` [B, T]
        says which are words (the regulariser counts their attention only, not padding's)."""
        keys = self.keys(grid)                                                   # (B, P, A)

        def one_word(carry, word):
            stepped = self.step(grid, keys, word, *carry[:2])
            return stepped, stepped

        start = (h, c, ops.zeros_like(grid[:, 0]), ops.zeros_like(grid[..., 0]))
        _, (hs, _, contexts, weights) = ops.scan(one_word, start, ops.moveaxis(embedded, 1, 0))
        if training and self.regularization:
            counted = ops.moveaxis(ops.cast(real, weights.dtype), 1, 0)[..., None]  # (T, B, 1)
            attended = ops.sum(weights * counted, axis=0)                        # (B, P)
            self.add_loss(self.regularization * ops.mean((1.0 - attended) ** 2))
        return ops.moveaxis(hs, 0, 1), ops.moveaxis(contexts, 0, 1)


@architecture("attention")
class SoftAttention(CaptionModel):
    """Show, Attend and Tell: the grid, standardised, is what every step reads (with its
    attention keys, computed once an image); the first state comes from the grid's mean (the
    paper's f_init); the head reads the hidden state beside the context vector."""
    reads_grid = can_read_grid = attends = True
    image_enters = ("core", "its mean: initial state;\nattended before every word")

    def image_layers(self, config):
        self.init_state = layers.Dense(2 * config.units, activation="tanh", name="init_state")

    def core_layers(self, config):
        self.attention_lstm = AttentionLSTM(config.units, config.attention_regularization,
                                            name="attention_lstm")

    def parts(self):
        return {"image": [self.feature_norm, self.image_dropout, self.init_state],
                "words": [self.embedding, self.caption_dropout], "core": [self.attention_lstm],
                "head": [self.decoder, self.next_word]}

    def grid_and_state(self, image, training=False):
        """The standardised grid [B, P, D] and the first state, from the grid's mean."""
        grid = self.standardised(image, training)                                # (B, P, D)
        return grid, ops.split(self.init_state(ops.mean(grid, axis=1)), 2, axis=-1)  # (B, units)

    def start(self, image, length, training=False):
        """((the grid, its attention keys [B, P, A]), the LSTM's first state (h, c))."""
        grid, state = self.grid_and_state(image, training)
        return (grid, self.attention_lstm.keys(grid)), state

    def step(self, context, word, state):
        h, c, read, weights = self.attention_lstm.step(*context, self.embed_word(word), *state)
        return self.head(ops.concatenate([h, read], axis=-1)), [h, c], weights

    def read(self, inputs, training=False):
        image, tokens = inputs
        grid, (h, c) = self.grid_and_state(image, training)
        embedded = self.caption_dropout(self.embedding(tokens), training=training)  # (B, T, E)
        hidden, contexts = self.attention_lstm(grid, embedded, h, c, ops.not_equal(tokens, 0),
                                               training=training)  # (B, T, units), (B, T, D)
        return ops.concatenate([hidden, contexts], axis=-1)                     # (B, T, units + D)
