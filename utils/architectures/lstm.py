"""The LSTM family: four places for the image, as Tanti, Gatt and Camilleri compare them in
"Where to put the image in an image caption generator" (2018).

All four have the same layers: the image branch (standardised features -> Dropout -> Dense), the
word branch (Embedding -> Dropout), one LSTM and the same head after it. Only where the projected
image enters differs:

    merge        the image never enters the LSTM: it is added to the LSTM's output at every step
    init-inject  the image is the LSTM's initial hidden state (its memory cell starts at zero)
    pre-inject   the image is the LSTM's first input, before <start>
    par-inject   the image is concatenated to every word's embedding

    merge:   image features -> Normalization -> Dropout -> Dense(units, relu) --.
                                                                                 + -> Dense(units, relu)
             caption tokens -> Embedding (GloVe) -> Dropout -> LSTM(units) -----'     -> Dense(vocab, softmax)

`call` runs the LSTM layer over whole captions, which steps the very cell `step` uses (and, on a
GPU, cuDNN's kernel), so a subclass says only where its image enters: `initial_state`,
`lstm_input`, `head_input`. The decoding state is the LSTM's (h, c).
"""
from keras import layers, ops

from .base import CaptionModel, architecture

__all__ = ["LSTMCaptionModel", "Merge", "InitInject", "PreInject", "ParInject"]


class LSTMCaptionModel(CaptionModel):
    """An LSTM over the words, the image projected once; a subclass says where it enters."""

    def image_layers(self, config):
        self.image_dense = layers.Dense(config.units, activation="relu", name="image_dense")

    def core_layers(self, config):
        self.lstm = layers.LSTM(config.units, return_sequences=True, name="lstm")

    def parts(self):
        return {"image": [self.feature_norm, self.image_dropout, self.image_dense],
                "words": [self.embedding, self.caption_dropout], "core": [self.lstm],
                "head": [self.decoder, self.next_word]}

    # Where the image enters: the LSTM's first state, what it reads, what the head reads.
    def initial_state(self, projected):
        """The LSTM's state (h, c) before <start>: zeros [B, units] unless the image sets it."""
        zeros = ops.repeat(ops.zeros_like(projected[:, :1]), self.config.units, axis=1)
        return [zeros, zeros]

    def lstm_input(self, embedded, projected):
        """What the LSTM reads for each word [B, [T,] E]: the word itself."""
        return embedded

    def head_input(self, hidden, projected):
        """What the head reads of the LSTM's output [B, [T,] units]: the output itself."""
        return hidden

    def start(self, image, length, training=False):
        """((the projected image [B, P],), the LSTM's first state (h, c)), whatever the length."""
        projected = self.image_dense(self.standardised(image, training))        # (B, P)
        return (projected,), self.initial_state(projected)

    def step(self, context, word, state):
        projected, = context
        hidden, state = self.lstm.cell(self.lstm_input(self.embed_word(word), projected), state)
        return self.head(self.head_input(hidden, projected)), state, None

    def read(self, inputs, training=False):
        image, tokens = inputs
        (projected,), state = self.start(image, ops.shape(tokens)[1], training)
        embedded = self.caption_dropout(self.embedding(tokens), training=training)  # (B, T, E)
        # Captions are padded after their last word, which the loss ignores: no mask needed.
        hidden = self.lstm(self.lstm_input(embedded, projected), initial_state=state,
                           training=training)                                     # (B, T, units)
        return self.head_input(hidden, projected)


def along(projected, like):
    """The image [B, P] repeated along a caption's length when `like` is [B, T, ...]."""
    if len(like.shape) == 3:
        return ops.zeros_like(like[..., :1]) + ops.expand_dims(projected, 1)    # (B, T, P)
    return projected


@architecture("merge")
class Merge(LSTMCaptionModel):
    image_enters = ("head", "+ image,\nat every step")

    def head_input(self, hidden, projected):
        return hidden + along(projected, hidden)


@architecture("init-inject")
class InitInject(LSTMCaptionModel):
    image_enters = ("core", "initial state")

    def initial_state(self, projected):
        return [projected, super().initial_state(projected)[1]]


@architecture("pre-inject")
class PreInject(LSTMCaptionModel):
    image_enters = ("core", "first input, before <start>")

    def image_layers(self, config):  # the image is read as a word: projected to a word's size
        self.image_dense = layers.Dense(config.embedding_dim, activation="relu",
                                        name="image_dense")

    def initial_state(self, projected):
        """The state after reading the image (its output is dropped, not its state)."""
        return self.lstm.cell(projected, super().initial_state(projected))[1]


@architecture("par-inject")
class ParInject(LSTMCaptionModel):
    image_enters = ("core", "beside every word")

    def lstm_input(self, embedded, projected):
        return ops.concatenate([embedded, along(projected, embedded)], axis=-1)  # (..., E + P)
