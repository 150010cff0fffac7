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

And a sixth without an LSTM, the decoder of the TensorFlow captioning tutorial and keras-io's
example (Vaswani et al. 2017):

    transformer  blocks of causal self-attention over the caption so far, cross-attention over the
                 image (the grid's positions when there is a grid, else the pooled vector
                 projected into a few positions) and a feed-forward layer; decoding caches each
                 block's keys and values, so a step attends from one new position only

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
           "Transformer", "DecoderBlock", "architecture_class", "build_caption_model",
           "set_feature_statistics"]

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
    blocks: int = 2               # transformer: decoder blocks
    heads: int = 4                # transformer: attention heads of a block (units / heads each)
    memory_slots: int = 4         # transformer on pooled features: positions the image becomes

    @property
    def reads_grid(self):
        """Whether the model reads a grid of positions [images, positions, dim] an image: the
        attention model always, the transformer when given `positions`."""
        cls = architecture_class(self.architecture)
        return cls.reads_grid or (cls.can_read_grid and self.positions is not None)

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
    can_read_grid = False  # True: reads grids when its config gives `positions`, else vectors
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


# Dropout inside the Transformer's blocks, on each residual branch (the TF tutorial's rate);
# DROPOUT (config.dropout) acts on its inputs, the image and the words, as in the LSTMs.
BLOCK_DROPOUT = 0.1


def sinusoid(positions, dim):
    """Vaswani et al.'s position vectors [..., dim] for integer positions [...]: any caption length,
    no weights, and a step's vector is the same as that position's in the whole caption."""
    rates = 1.0 / 10000.0 ** (ops.arange(0, dim, 2, dtype="float32") / dim)       # (dim / 2,)
    angles = ops.expand_dims(ops.cast(positions, "float32"), -1) * rates          # (..., dim / 2)
    return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)           # (..., dim)


@keras.saving.register_keras_serializable(package="utils")
class DecoderBlock(layers.Layer):
    """One pre-norm Transformer decoder block (as GPT-2 and nanoGPT order it): causal
    self-attention over the caption, cross-attention over the image's memory, a feed-forward
    layer, each added back to its input. `call` runs whole captions through Keras's
    MultiHeadAttention; `step` reads one new position with the same layers' projections
    (`query_dense`, `key_dense`, ...), from a cache of the earlier positions' keys and values, so
    that a step costs one position's attention, not the whole prefix again."""

    def __init__(self, units, heads, **kwargs):
        super().__init__(**kwargs)
        self.units, self.heads = units, heads
        key_dim = units // heads
        self.self_norm = layers.LayerNormalization(name="self_norm")
        self.self_attention = layers.MultiHeadAttention(heads, key_dim, name="self_attention")
        self.cross_norm = layers.LayerNormalization(name="cross_norm")
        self.cross_attention = layers.MultiHeadAttention(heads, key_dim, name="cross_attention")
        self.feed_norm = layers.LayerNormalization(name="feed_norm")
        self.feed_in = layers.Dense(4 * units, activation="gelu", name="feed_in")
        self.feed_out = layers.Dense(units, name="feed_out")
        self.dropout = layers.Dropout(BLOCK_DROPOUT)

    def build(self, x_shape, memory_shape, mask_shape=None):
        self.self_norm.build(x_shape)
        self.self_attention.build(x_shape, x_shape)
        self.cross_norm.build(x_shape)
        self.cross_attention.build(x_shape, memory_shape)
        self.feed_norm.build(x_shape)
        self.feed_in.build(x_shape)
        self.feed_out.build((*x_shape[:-1], 4 * self.units))

    def compute_output_shape(self, x_shape, memory_shape, mask_shape=None):
        return x_shape, (x_shape[0], x_shape[1], memory_shape[1])

    def get_config(self):
        return {**super().get_config(), "units": self.units, "heads": self.heads}

    def feed_forward(self, x, training=False):
        return self.dropout(self.feed_out(self.feed_in(self.feed_norm(x))), training=training)

    def call(self, x, memory, mask, training=False):
        """Every position of captions x [B, T, units] after the block, and the cross-attention's
        weights [B, T, S] (the mean over heads). `mask` [B, T, T]: which positions each reads."""
        normed = self.self_norm(x)
        x = x + self.dropout(self.self_attention(normed, normed, attention_mask=mask,
                                                 training=training), training=training)
        read, weights = self.cross_attention(self.cross_norm(x), memory, training=training,
                                             return_attention_scores=True)  # weights (B, H, T, S)
        x = x + self.dropout(read, training=training)
        return x + self.feed_forward(x, training), ops.mean(weights, axis=1)

    def memory_keys(self, memory):
        """The cross-attention's keys and values of an image's memory [B, S, heads, key_dim]:
        computed once an image, read at every step."""
        return (self.cross_attention.key_dense(memory),
                self.cross_attention.value_dense(memory))

    @staticmethod
    def attend(attention, x, keys, values):
        """`attention`'s output for one position x [B, units] reading keys and values [B, S, H, K]
        (what MultiHeadAttention computes, for one query): (output [B, units], weights [B, H, S])."""
        query = attention.query_dense(ops.expand_dims(x, 1))[:, 0]               # (B, H, K)
        scores = ops.einsum("bhk,bshk->bhs", query, keys) / ops.sqrt(
            ops.cast(ops.shape(keys)[-1], query.dtype))
        # The softmax written out: ops.softmax warns of an axis of size 1 (the first word).
        weights = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True))
        weights = weights / ops.sum(weights, axis=-1, keepdims=True)             # (B, H, S)
        read = ops.einsum("bhs,bshk->bhk", weights, values)                      # (B, H, K)
        return attention.output_dense(ops.expand_dims(read, 1))[:, 0], weights   # (B, units)

    def step(self, x, memory_keys, memory_values, keys, values):
        """One new position x [B, units] after the block, given the keys and values of the earlier
        positions [B, t, H, K]: (x, the cache with this position's added [B, t + 1, H, K], the
        cross-attention's weights [B, S], the mean over heads)."""
        normed = ops.expand_dims(self.self_norm(x), 1)                           # (B, 1, units)
        keys = ops.concatenate([keys, self.self_attention.key_dense(normed)], axis=1)
        values = ops.concatenate([values, self.self_attention.value_dense(normed)], axis=1)
        read, _ = self.attend(self.self_attention, normed[:, 0], keys, values)
        x = x + read
        read, weights = self.attend(self.cross_attention, self.cross_norm(x), memory_keys,
                                    memory_values)
        x = x + read
        return x + self.feed_forward(x), keys, values, ops.mean(weights, axis=1)


@architecture("transformer")
class Transformer(CaptionModel):
    """A Transformer decoder (Vaswani et al. 2017), as the TensorFlow tutorial and keras-io caption
    with one: the words (GloVe, projected to `units`, plus their positions' sinusoids) pass through
    `blocks` DecoderBlocks that each read the image's memory, then a last layer norm and the head
    every architecture has. The memory is the grid's positions (each projected, plus a learned
    vector of where it is) when the config gives `positions`, else the pooled vector projected
    into `memory_slots` positions. The state of a caption being written is each block's cache of
    keys and values; the maps notebook 05 draws are the cross-attention's weights, averaged over
    heads and blocks (where the decoder as a whole read)."""
    can_read_grid = True
    image_enters = ("core", "cross-attention\nin every block")

    @property
    def attends(self):  # maps over a grid's positions; over pooled slots they would mean nothing
        return self.config.reads_grid

    def image_layers(self, config):
        if config.units % config.heads:
            raise ValueError(f"units ({config.units}) must be a multiple of heads ({config.heads})")
        slots = 1 if config.reads_grid else config.memory_slots
        self.image_dense = layers.Dense(slots * config.units, activation="relu",
                                        name="image_dense")
        if config.reads_grid:
            self.grid_positions = layers.Embedding(config.positions, config.units,
                                                   name="grid_positions")

    def core_layers(self, config):
        self.word_dense = layers.Dense(config.units, name="word_dense")
        self.blocks = [DecoderBlock(config.units, config.heads, name=f"block_{i}")
                       for i in range(config.blocks)]
        self.final_norm = layers.LayerNormalization(name="final_norm")

    def parts(self):
        return {"image": [self.feature_norm, self.image_dropout, self.image_dense],
                "words": [self.embedding, self.word_dense, self.caption_dropout],
                "core": [*self.blocks, self.final_norm], "head": [self.decoder, self.next_word]}

    def memory(self, image, training=False):
        """The image as the positions the blocks read [B, S, units]."""
        projected = self.image_dense(self.image_dropout(self.feature_norm(image),
                                                        training=training))
        if self.config.reads_grid:                                               # (B, P, units)
            return projected + self.grid_positions(ops.arange(self.config.positions))
        return ops.reshape(projected, (-1, self.config.memory_slots, self.config.units))

    def words(self, embedded, positions, training=False):
        """Embedded words [..., E] at positions [...] as the blocks read them [..., units]."""
        x = self.word_dense(embedded)
        return self.caption_dropout(x + ops.cast(sinusoid(positions, self.config.units), x.dtype),
                                    training=training)

    def start(self, image, training=False):
        """(each block's memory keys and values, each block's empty cache of keys and values)."""
        memory = self.memory(image, training)                                    # (B, S, units)
        context = tuple(kv for block in self.blocks for kv in block.memory_keys(memory))
        empty = ops.zeros_like(context[0][:, :0])                                # (B, 0, H, K)
        return context, [empty] * (2 * len(self.blocks))

    def step(self, context, word, state):
        position = ops.shape(state[0])[1]  # the words read so far
        x = self.words(self.embed_word(word), ops.zeros_like(word) + position)  # (B, units)
        cache, maps = [], []
        for i, block in enumerate(self.blocks):
            x, keys, values, weights = block.step(x, *context[2 * i:2 * i + 2],
                                                  *state[2 * i:2 * i + 2])
            cache += [keys, values]
            maps.append(weights)                                                 # (B, S)
        probs = self.head(self.final_norm(x), None)
        return probs, cache, ops.mean(ops.stack(maps), axis=0) if self.attends else None

    def call(self, inputs, training=False, last_word_only=False):
        image, tokens = inputs
        memory = self.memory(image, training)                                    # (B, S, units)
        real = ops.not_equal(tokens, 0)                                          # (B, T)
        # Positions count real words, so a pre-padded prefix reads as the unpadded one.
        positions = ops.maximum(ops.cumsum(ops.cast(real, "int32"), axis=1) - 1, 0)
        x = self.words(self.embedding(tokens), positions, training)              # (B, T, units)
        length = ops.shape(tokens)[1]
        earlier = ops.expand_dims(ops.arange(length), 1) >= ops.arange(length)  # (T, T) causal
        # Each position reads the real words up to itself, and itself (padding too: a row with
        # nothing to read would be a softmax over nothing).
        mask = ops.logical_or(ops.logical_and(earlier, ops.expand_dims(real, 1)),
                              ops.eye(length, dtype="bool"))                     # (B, T, T)
        for block in self.blocks:
            x, _ = block(x, memory, mask, training=training)
        x = self.final_norm(x)
        if last_word_only:
            x = x[:, -1]                                                         # (B, units)
        return self.head(x, None)                                                # (B, [T,] V)


# The architectures that read a grid of positions (features [images, positions, dim]).
GRID_ARCHITECTURES = tuple(name for name, cls in ARCHITECTURES.items() if cls.reads_grid)
