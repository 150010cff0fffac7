"""Stage 4: the caption models, one class per architecture.

Four places for the image, as Tanti, Gatt and Camilleri compare them in "Where to put the image in
an image caption generator" (2018). Every one has the same layers: the image branch (standardised
features -> Dropout -> Dense), the word branch (Embedding -> Dropout), one LSTM and the same head
after it (Dense, then softmax). Only where the projected image enters differs:

    merge        the image never enters the LSTM: it is added to the LSTM's output at every step
    init-inject  the image is the LSTM's initial hidden state (its memory cell starts at zero)
    pre-inject   the image is the LSTM's first input, before <start>
    par-inject   the image is concatenated to every word's embedding

And a fifth, Xu et al.'s "Show, Attend and Tell" (2015), which reads a grid of positions (the
CNN's last convolutional map) instead of one pooled vector:

    attention    the LSTM starts from the grid's mean and, before every word, attends over the
                 grid: a weight per position from the hidden state, the gated weighted mean of
                 the grid (the context vector) read beside the word and passed to the head

    merge:   image features -> Normalization -> Dropout -> Dense(units, relu) --.
                                                                                 + -> Dense(units, relu)
             caption tokens -> Embedding (GloVe) -> Dropout -> LSTM(units) -----'     -> Dense(vocab, softmax)

Each architecture is a class with the same three methods: `start` (an image -> what every step
reads of it, and the LSTM's first state), `step` (one word -> the next word's probabilities) and
`call` (whole captions -> the next word after every prefix, for training). `call` runs the LSTM
layer over the caption, which steps the very cell `step` uses (and, on a GPU, cuDNN's kernel), so
a subclass says only where its image enters: `initial_state`, `lstm_input`, `head`.

A model is described by a `ModelConfig`, kept in the run's record (`utils.runs`), and rebuilt from
it by `build_caption_model`, as nanoGPT rebuilds `GPT(GPTConfig(...))`: `ARCHITECTURES` maps the
record's name to its class, so a new architecture is one class and one decorator line.
"""
import dataclasses
from dataclasses import dataclass

import keras
from keras import layers, ops

__all__ = ["ARCHITECTURES", "GRID_ARCHITECTURES", "ModelConfig", "CaptionModel", "Merge",
           "InitInject", "PreInject", "ParInject", "SoftAttention", "AttentionLSTM",
           "architecture_class", "build_caption_model", "set_feature_statistics"]

# Architecture name (notebook 04's ARCHITECTURE, the record's model.architecture) -> its class.
ARCHITECTURES = {}


def architecture(name):
    """Class decorator: registers a CaptionModel subclass under `name` (and with Keras, so that
    `model.save` and `keras.models.load_model` work too, in safe mode)."""
    def register(cls):
        cls.architecture = name
        ARCHITECTURES[name] = cls
        return keras.saving.register_keras_serializable(package="utils")(cls)
    return register


def architecture_class(name):
    """The class of the architecture `name`, or an error listing the choices."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


@dataclass(frozen=True)
class ModelConfig:
    """The model's shape: everything `build_caption_model` needs, kept in the run record."""
    vocab_size: int               # words, special tokens included
    feature_dim: int              # size of one image's feature vector
    architecture: str = "merge"   # one of ARCHITECTURES
    embedding_dim: int = 50       # word vector size (the GloVe matrix's, when one is given)
    units: int = 256              # image projection, LSTM and decoder sizes
    dropout: float = 0.5          # on the image features and on the embedded words
    train_embedding: bool = True  # fine-tune the (GloVe) embedding too
    positions: int = None         # attention: grid positions an image has (rows x columns)
    attention_regularization: float = 1.0  # attention: weight of the doubly stochastic term

    @property
    def reads_grid(self):
        """Whether the model reads a grid of positions [images, positions, dim] an image."""
        return architecture_class(self.architecture).reads_grid

    @property
    def image_shape(self):
        """One image's features as the model reads them."""
        return (self.positions, self.feature_dim) if self.reads_grid else (self.feature_dim,)


def set_feature_statistics(model, mean, variance):
    """Standardise the model's input features with these (the training features' statistics):
    any encoder's features then arrive on one scale, at training and at captioning time alike.
    They are weights of the model (not trained), so they travel with its weights file."""
    norm = model.feature_norm
    norm.adapt_mean.assign(ops.cast(mean, "float32"))
    norm.adapt_variance.assign(ops.cast(variance, "float32"))
    norm.finalize_state()


def build_caption_model(config, embedding_matrix=None, feature_stats=None):
    """The model `config` (a ModelConfig) describes, its weights created: (features [B, F], tokens
    [B, T]) -> next-word probabilities [B, T, V]; for a grid architecture the features are
    grids [B, config.positions, F].

    `embedding_matrix`: [V, embedding_dim] initial word vectors (GloVe), else uniform random.
    `feature_stats`: (mean, variance) of the training features (see set_feature_statistics);
    without them the features are read as they are (a loaded run's weights bring its own).
    """
    cls = architecture_class(config.architecture)
    shape = (config.vocab_size, config.embedding_dim)
    if embedding_matrix is not None and tuple(embedding_matrix.shape) != shape:
        raise ValueError(f"the embedding matrix is {tuple(embedding_matrix.shape)}, the model "
                         f"needs {shape} (vocabulary size, embedding_dim)")
    if cls.reads_grid and not config.positions:
        raise ValueError(f"{config.architecture} reads a grid of positions: give `positions`")
    model = cls(config, embedding_matrix)
    # One symbolic call creates every weight, in the order of the layers (and gives the
    # summary its shapes: any batch, any caption length).
    model((keras.Input(config.image_shape), keras.Input((None,), dtype="int32")))
    if feature_stats is not None:
        set_feature_statistics(model, *feature_stats)
    return model


class CaptionModel(keras.Model):
    """What every architecture shares: the word branch, the head, the standardised image, the
    sequence `call` and the one-word `step`. A subclass creates its image branch and core in
    `image_layers` and `core_layers` and says where the image enters."""
    architecture = None   # its name in ARCHITECTURES, set by @architecture
    reads_grid = False    # True: features are grids [B, positions, D]
    attends = False       # True: `step` returns attention weights over the image's positions
    image_enters = None   # (the part it enters, "how"), as draw_model labels it

    def __init__(self, config, embedding_matrix=None, **kwargs):
        super().__init__(name=f"{self.architecture.replace('-', '_')}_captioner", **kwargs)
        self.config = config
        initializer = ("uniform" if embedding_matrix is None
                       else keras.initializers.Constant(embedding_matrix))
        # Made in this order, the order of the seed projects' layers: each layer made draws on
        # the random seed, so the same seed gives the same initial weights.
        self.feature_norm = layers.Normalization(name="feature_norm")
        # Built here, eagerly: its statistics are weights (set_feature_statistics) that it reads
        # through tensors made when it is built, which Keras's first, traced call would lose.
        self.feature_norm.build((None, *config.image_shape))
        self.image_dropout = layers.Dropout(config.dropout, name="image_dropout")
        self.image_layers(config)
        self.embedding = layers.Embedding(config.vocab_size, config.embedding_dim,
                                          embeddings_initializer=initializer,
                                          trainable=config.train_embedding, name="embedding")
        self.caption_dropout = layers.Dropout(config.dropout, name="caption_dropout")
        self.core_layers(config)
        self.decoder = layers.Dense(config.units, activation="relu", name="decoder")
        self.next_word = layers.Dense(config.vocab_size, activation="softmax", name="next_word",
                                      dtype="float32")

    # Keras's own saving (`model.save`): the ModelConfig is the whole config, as in the record.
    def get_config(self):
        return {"model_config": dataclasses.asdict(self.config)}

    @classmethod
    def from_config(cls, config):
        return build_caption_model(ModelConfig(**config["model_config"]))

    def build_from_config(self, config):
        """Nothing to do: `from_config` returns the model built."""

    def image_layers(self, config):
        self.image_dense = layers.Dense(config.units, activation="relu", name="image_dense")

    def core_layers(self, config):
        self.lstm = layers.LSTM(config.units, return_sequences=True, name="lstm")

    def parts(self):
        """What draw_model shows, by branch, each in order."""
        return {"image": [self.feature_norm, self.image_dropout, self.image_dense],
                "words": [self.embedding, self.caption_dropout], "core": [self.lstm],
                "head": [self.decoder, self.next_word]}

    # Where the image enters: the LSTM's first state, what it reads, the head after it.
    def initial_state(self, projected):
        """The LSTM's state (h, c) before <start>: zeros [B, units] unless the image sets it."""
        zeros = ops.repeat(ops.zeros_like(projected[:, :1]), self.config.units, axis=1)
        return [zeros, zeros]

    def lstm_input(self, embedded, projected):
        """What the LSTM reads for each word [B, [T,] E]: the word itself."""
        return embedded

    def head(self, hidden, projected):
        """The next word's probabilities from the LSTM's output [B, [T,] units]."""
        return self.next_word(self.decoder(hidden))

    def embed_word(self, word):
        """One word of each caption [B] as its vector [B, E]: the embedding's table looked up
        directly, since a padding mask has no meaning for one word."""
        return ops.take(self.embedding.embeddings, word, axis=0)

    # The three calls every architecture answers.
    def start(self, image, training=False):
        """(what every step reads of the images, the LSTM's first state) for features [B, F]."""
        projected = self.image_dense(self.image_dropout(self.feature_norm(image),
                                                        training=training))      # (B, P)
        return (projected,), self.initial_state(projected)

    def step(self, context, word, state):
        """One word [B] of every caption read: (next-word probabilities [B, V], new state,
        attention weights [B, positions] or None)."""
        projected, = context
        hidden, state = self.lstm.cell(self.lstm_input(self.embed_word(word), projected), state)
        return self.head(hidden, projected), state, None

    def call(self, inputs, training=False, last_word_only=False):
        """Next-word probabilities after every prefix [B, T, V] of captions [B, T]; with
        `last_word_only`, after the whole (pre-padded) caption only [B, V]."""
        image, tokens = inputs
        (projected,), state = self.start(image, training)
        embedded = self.caption_dropout(self.embedding(tokens), training=training)  # (B, T, E)
        # Padding (id 0) is skipped: the state carries over it, so pre-padded prefixes read as
        # unpadded ones. Passed explicitly: the masks of Keras layers do not survive the ops here.
        hidden = self.lstm(self.lstm_input(embedded, projected), initial_state=state,
                           mask=ops.not_equal(tokens, 0), training=training)     # (B, T, units)
        # A copy without the LSTM's Keras mask: probabilities carrying it would make Keras
        # average the loss over the real words a second time (SmoothedCaptionLoss does it).
        hidden = ops.copy(hidden)
        if last_word_only:
            hidden = hidden[:, -1]                                               # (B, units)
        return self.head(hidden, projected)                                      # (B, [T,] V)


def _along(projected, like):
    """The image [B, P] repeated along a caption's length when `like` is [B, T, ...]."""
    if len(like.shape) == 3:
        return ops.zeros_like(like[..., :1]) + ops.expand_dims(projected, 1)    # (B, T, P)
    return projected


@architecture("merge")
class Merge(CaptionModel):
    image_enters = ("head", "+ image,\nat every step")

    def head(self, hidden, projected):
        return super().head(hidden + _along(projected, hidden), projected)


@architecture("init-inject")
class InitInject(CaptionModel):
    image_enters = ("core", "initial state")

    def initial_state(self, projected):
        return [projected, super().initial_state(projected)[1]]


@architecture("pre-inject")
class PreInject(CaptionModel):
    image_enters = ("core", "first input, before <start>")

    def image_layers(self, config):  # the image is read as a word: projected to a word's size
        self.image_dense = layers.Dense(config.embedding_dim, activation="relu",
                                        name="image_dense")

    def initial_state(self, projected):
        """The state after reading the image (its output is dropped, not its state)."""
        return self.lstm.cell(projected, super().initial_state(projected))[1]


@architecture("par-inject")
class ParInject(CaptionModel):
    image_enters = ("core", "beside every word")

    def lstm_input(self, embedded, projected):
        return ops.concatenate([embedded, _along(projected, embedded)], axis=-1)  # (..., E + P)


@keras.saving.register_keras_serializable(package="utils")
class AttentionLSTM(layers.Layer):
    """An LSTM that looks at the image before every word: Xu et al.'s soft (deterministic)
    attention. `attend` weighs the grid's positions by how well each matches the hidden state (a
    softmax over positions) and returns the weighted mean of the grid, scaled by a gate the
    hidden state sets (the paper's beta); `step` reads one word beside that context vector.
    `call` runs whole captions by scanning `step`, so training and decoding compute the same
    thing; padding (mask False) leaves the state as it was. In training it adds the doubly
    stochastic regulariser to the model's losses: each position should get about as much
    attention over a caption as every other, (1 - its summed weights)^2, averaged over positions
    and captions as sgrvinod's tutorial does (the paper sums over positions).
    """

    def __init__(self, units, regularization=1.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.regularization = units, regularization
        self.cell = layers.LSTMCell(units, name="cell")
        self.keys = layers.Dense(units, name="keys")    # each position, once an image
        self.query = layers.Dense(units, name="query")  # the hidden state, at every word
        self.score = layers.Dense(1, name="score")
        self.gate = layers.Dense(1, activation="sigmoid", name="gate")

    def build(self, grid_shape, embedded_shape, h_shape=None, c_shape=None, mask_shape=None):
        self.keys.build(grid_shape)
        self.query.build((None, self.units))
        self.score.build((None, grid_shape[1], self.units))
        self.gate.build((None, self.units))
        self.cell.build((None, embedded_shape[-1] + grid_shape[-1]))

    def compute_output_shape(self, grid_shape, embedded_shape, h_shape=None, c_shape=None,
                             mask_shape=None):
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

    def call(self, grid, embedded, h, c, mask, training=False):
        """Hidden states [B, T, units] and context vectors [B, T, D] of every word."""
        keys = self.keys(grid)                                                   # (B, P, A)

        def one_word(carry, inputs):
            word, real = inputs[:, :-1], inputs[:, -1:] > 0.5                    # (B, E), (B, 1)
            stepped = self.step(grid, keys, word, *carry[:2])
            kept = tuple(ops.where(real, new, old) for new, old in zip(stepped[:2], carry[:2]))
            carry = (*kept, *(new * ops.cast(real, new.dtype) for new in stepped[2:]))
            return carry, carry

        start = (h, c, ops.zeros_like(grid[:, 0]), ops.zeros_like(grid[..., 0]))
        # The mask rides along as one more value of each word: Keras's TensorFlow scan fails on
        # several sequences of unknown length.
        words = ops.concatenate([embedded, ops.cast(mask, embedded.dtype)[..., None]], axis=-1)
        _, (hs, _, contexts, weights) = ops.scan(one_word, start, ops.moveaxis(words, 1, 0))
        if training and self.regularization:
            attended = ops.sum(weights, axis=0)                                  # (B, P)
            self.add_loss(self.regularization * ops.mean((1.0 - attended) ** 2))
        return ops.moveaxis(hs, 0, 1), ops.moveaxis(contexts, 0, 1)


@architecture("attention")
class SoftAttention(CaptionModel):
    """Show, Attend and Tell: the grid, standardised, is what every step reads (with its
    attention keys, computed once an image); the first state comes from the grid's mean (the
    paper's f_init); the head reads the hidden state beside the context vector."""
    reads_grid = attends = True
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
        grid = self.image_dropout(self.feature_norm(image), training=training)  # (B, P, D)
        return grid, ops.split(self.init_state(ops.mean(grid, axis=1)), 2, axis=-1)  # (B, units)

    def start(self, image, training=False):
        grid, state = self.grid_and_state(image, training)
        return (grid, self.attention_lstm.keys(grid)), state                    # keys (B, P, A)

    def head(self, hidden, context_vector):
        return super().head(ops.concatenate([hidden, context_vector], axis=-1), None)

    def step(self, context, word, state):
        h, c, read, weights = self.attention_lstm.step(*context, self.embed_word(word), *state)
        return self.head(h, read), [h, c], weights

    def call(self, inputs, training=False, last_word_only=False):
        image, tokens = inputs
        grid, (h, c) = self.grid_and_state(image, training)
        embedded = self.caption_dropout(self.embedding(tokens), training=training)  # (B, T, E)
        hidden, contexts = self.attention_lstm(grid, embedded, h, c, ops.not_equal(tokens, 0),
                                               training=training)  # (B, T, units), (B, T, D)
        if last_word_only:
            hidden, contexts = hidden[:, -1], contexts[:, -1]                    # (B, units), (B, D)
        return self.head(hidden, contexts)                                       # (B, [T,] V)


# The architectures that read a grid of positions (features [images, positions, dim]).
GRID_ARCHITECTURES = tuple(name for name, cls in ARCHITECTURES.items() if cls.reads_grid)
