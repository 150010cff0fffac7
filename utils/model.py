"""Stage 4: the caption models and their training.

Four places for the image, as Tanti, Gatt and Camilleri compare them in "Where to put the image in
an image caption generator" (2018). Every architecture has the same layers: the image branch
(standardised features -> Dropout -> Dense), the word branch (Embedding -> Dropout), one LSTM and
the same head after it (Dense, then softmax). Only where the projected image enters differs:

    merge        the image never enters the LSTM: it is added to the LSTM's output at every step
    init-inject  the image is the LSTM's initial hidden state (its memory cell starts at zero)
    pre-inject   the image is the LSTM's first input, before <start>
    par-inject   the image is concatenated to every word's embedding

And a fifth, Xu et al.'s "Show, Attend and Tell" (2015), which reads a grid of positions (the
CNN's last convolutional map) instead of one pooled vector:

    attention    the LSTM starts from the grid's mean and, before every word, attends over the
                 grid: a weight per position from the hidden state, the gated weighted mean of
                 the grid (the context vector) read beside the word and passed to the head

    merge:   image features -> [Normalization] -> Dropout -> Dense(units, relu) ------------.
                                                                                             + -> Dense(units, relu) -> Dense(vocab, softmax)
             caption tokens -> Embedding (GloVe) -> Dropout -> LSTM(units) -----------------'

The seed projects train the merge model on one sample per caption prefix. Because the LSTM is
causal, running it once over the whole caption (`return_sequences=True`) gives the same next-word
prediction for every prefix at once, for every architecture: one pass per caption instead of one
per word. `prefix_model` builds the seed formulation from the same layers, for the equivalence
test and the benchmarks.

A model is described by a `ModelConfig` and trained by a `TrainingConfig`: both are saved in the
run's record (`utils.runs`) and a model is rebuilt from them, as nanoGPT rebuilds `GPTConfig`.
"""
import csv
import mmap
import shutil
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from .files import atomic_path, read_json, save_npy, write_json

__all__ = ["ARCHITECTURES", "GRID_ARCHITECTURES", "ModelConfig", "TrainingConfig", "LAYER_NAMES",
           "ATTENTION_LAYER_NAMES", "layer_names", "AttentionLSTM", "build_caption_model",
           "build_model", "compile_model", "model_parts", "architecture_of", "project_image",
           "initial_state", "step_input", "predict_word", "prefix_model", "expand_prefixes",
           "draw_model", "SmoothedCaptionLoss", "feature_statistics", "encode_captions",
           "caption_dataset", "batch_count", "CaptionData", "BestModelCheckpoint",
           "RandomStateBackup", "ReplayedCounters", "read_history", "check_training_state",
           "STRATEGIES", "distribution_strategy", "train_caption_model"]


def _fold_no_mapped_files():
    """Keep TensorFlow from copying a memory-mapped table once when a tf.data function starts.

    When TensorFlow instantiates a function, its classic graph optimiser folds constants: it runs
    every node without inputs, the ImmutableConst that maps a feature file included, copies each
    output, and only then drops those over 10 MB. Measured at 1M images: one transient copy of the
    4 GB file, 4.2 GB of peak memory instead of 0.7. Grappler, which runs anyway, folds constants
    too but checks their size first, so turning the classic pass off (opt_level L0) loses nothing
    we measured. No public setting reaches it (`tf.config.optimizer` sets Grappler's options), so
    this writes the eager context's config, which works only before TensorFlow has started; after,
    a mapped table warns when it is read, and tests/test_model.py fails if a TensorFlow release
    stops honouring the setting. Returns whether it is set.
    """
    from tensorflow.python.eager import context  # the only place utils uses TensorFlow privates
    ctx = context.context()
    if ctx._initialized:
        return False
    config = ctx.config
    config.graph_options.optimizer_options.opt_level = tf.compat.v1.OptimizerOptions.L0
    ctx._config = config
    return True


_MAPPED_FILES_STAY_MAPPED = _fold_no_mapped_files()

# Rows of a table read at a time where it may be memory-mapped (feature statistics, caption
# lengths, each epoch's permutation): memory follows this, not the table's size.
PIECE_ROWS = 4096
# Where the image enters the caption model (see above); merge is the default.
ARCHITECTURES = ("merge", "init-inject", "pre-inject", "par-inject", "attention")
# Of those, the ones that read a grid of positions (features [images, positions, dim]).
GRID_ARCHITECTURES = ("attention",)


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


@dataclass(frozen=True)
class TrainingConfig:
    """How a model is trained, kept in the run record. The defaults are notebook 04's (tested)."""
    epochs: int = 50                # at most: early stopping usually ends training first
    batch_size: int = 64            # captions per batch
    learning_rate: float = 1e-3     # Adam's
    lr_plateau_factor: float = 0.5  # learning rate x this after an epoch without progress; None: constant
    label_smoothing: float = 0.1    # share of each target spread over the whole vocabulary
    patience: int = 4               # early stopping, in epochs without a better validation loss
    seed: int = 0                   # initial weights, dropout and the order of batches
    mixed_precision: bool = False   # float16 compute (GPU)
    xla: bool = False               # compile the training step with XLA


LAYER_NAMES = ("feature_norm", "image_dropout", "image_dense", "embedding", "caption_dropout",
               "lstm", "decoder", "next_word")
# The attention model's: the grid's mean makes the first state, the LSTM attends.
ATTENTION_LAYER_NAMES = ("feature_norm", "image_dropout", "init_state", "embedding",
                         "caption_dropout", "attention_lstm", "decoder", "next_word")


def layer_names(architecture):
    return ATTENTION_LAYER_NAMES if architecture in GRID_ARCHITECTURES else LAYER_NAMES


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

    def compute_output_shape(self, grid_shape, embedded_shape, *state_and_mask_shapes):
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


def build_caption_model(config, embedding_matrix=None, feature_stats=None):
    """The model of `config` (a ModelConfig, its `architecture` among ARCHITECTURES) over whole
    captions: (features [B, F], tokens [B, T]) -> next-word probabilities [B, T, V]; for
    attention the features are grids [B, positions, F] (`config.positions`).

    `embedding_matrix`: [V, embedding_dim] initial word vectors (GloVe), else uniform random.
    `feature_stats`: (mean, variance) of the training features, standardised inside the model so
    that any encoder's features arrive on one scale, at training and at captioning time alike.
    """
    if config.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {config.architecture!r}; choose one of "
                         f"{', '.join(ARCHITECTURES)}")
    shape = (config.vocab_size, config.embedding_dim)
    if embedding_matrix is not None and tuple(embedding_matrix.shape) != shape:
        raise ValueError(f"the embedding matrix is {tuple(embedding_matrix.shape)}, the model "
                         f"needs {shape} (vocabulary size, embedding_dim)")
    initializer = ("uniform" if embedding_matrix is None
                   else keras.initializers.Constant(embedding_matrix))
    mean, variance = feature_stats if feature_stats is not None else (0.0, 1.0)
    units, dropout = config.units, config.dropout
    # pre-inject feeds the image to the LSTM as a word: it is projected to a word's size.
    projection = config.embedding_dim if config.architecture == "pre-inject" else units
    grid = config.architecture in GRID_ARCHITECTURES
    if grid and not config.positions:
        raise ValueError(f"{config.architecture} reads a grid of positions: give `positions`")
    # Made only if the architecture has them, in this order: each layer made draws on the seed.
    make = {
        "feature_norm": lambda: layers.Normalization(mean=mean, variance=variance,
                                                     name="feature_norm"),
        "image_dropout": lambda: layers.Dropout(dropout, name="image_dropout"),
        "image_dense": lambda: layers.Dense(projection, activation="relu", name="image_dense"),
        # attention: the first (h, c) from the grid's mean, as the paper's f_init
        "init_state": lambda: layers.Dense(2 * units, activation="tanh", name="init_state"),
        "embedding": lambda: layers.Embedding(*shape, embeddings_initializer=initializer,
                                              trainable=config.train_embedding, name="embedding"),
        "caption_dropout": lambda: layers.Dropout(dropout, name="caption_dropout"),
        "lstm": lambda: layers.LSTM(units, return_sequences=True, name="lstm"),
        "attention_lstm": lambda: AttentionLSTM(units, config.attention_regularization,
                                                name="attention_lstm"),
        "decoder": lambda: layers.Dense(units, activation="relu", name="decoder"),
        "next_word": lambda: layers.Dense(config.vocab_size, activation="softmax",
                                          name="next_word", dtype="float32"),
    }
    parts = {name: make[name]() for name in layer_names(config.architecture)}
    image = keras.Input((config.positions, config.feature_dim) if grid else (config.feature_dim,),
                        name="image")
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    return keras.Model([image, tokens], _forward(parts, config.architecture, image, tokens),
                       name=f"{config.architecture.replace('-', '_')}_captioner")


def build_model(config, training=TrainingConfig(), embedding_matrix=None, feature_stats=None):
    """The one way a model is made for training: from its ModelConfig and TrainingConfig, seeded
    (same seed, same initial weights), in the training's precision, and compiled."""
    keras.utils.set_random_seed(training.seed)
    keras.mixed_precision.set_global_policy(
        "mixed_float16" if training.mixed_precision else "float32")
    return compile_model(build_caption_model(config, embedding_matrix, feature_stats), training)


def model_parts(model):
    """A caption model's layers by name, to build other formulations sharing its weights."""
    return {name: model.get_layer(name) for name in layer_names(architecture_of(model))}


def architecture_of(model):
    """The architecture a caption model was built with, from its name ("par_inject_captioner")."""
    name = model.name.removesuffix("_captioner").replace("_", "-")
    if name not in ARCHITECTURES:
        raise ValueError(f"{model.name!r} is not a caption model of utils.build_caption_model")
    return name


def project_image(parts, image):
    """The image branch: standardised features -> Dropout -> Dense; for attention, the grid
    standardised, without the Dense (the LSTM attends over it)."""
    image = parts["image_dropout"](parts["feature_norm"](image))
    return parts["image_dense"](image) if "image_dense" in parts else image


def initial_state(parts, architecture, projected):
    """The LSTM's state (h, c) before <start>: the image itself for init-inject, the state after
    reading the image for pre-inject (one step of the LSTM's cell), zeros otherwise."""
    # (B, units) zeros, built from `projected` so that the batch size may be unknown
    if architecture == "attention":  # `projected`: the grid [B, P, D]; the state from its mean
        return ops.split(parts["init_state"](ops.mean(projected, axis=1)), 2, axis=-1)
    zeros = ops.repeat(ops.zeros_like(projected[:, :1]), parts["lstm"].units, axis=1)
    if architecture == "init-inject":
        return [projected, zeros]
    if architecture == "pre-inject":
        return parts["lstm"].cell(projected, [zeros, zeros])[1]
    return [zeros, zeros]


def step_input(architecture, embedded, projected):
    """What the LSTM reads at each step: the word, and for par-inject the image beside it.
    `embedded`: [B, T, E] or [B, E]; `projected`: [B, P]."""
    if architecture != "par-inject":
        return embedded
    if len(embedded.shape) == 3:  # every position of a caption: broadcast over its length
        projected = ops.zeros_like(embedded[..., :1]) + ops.expand_dims(projected, 1)  # (B, T, P)
    return ops.concatenate([embedded, projected], axis=-1)  # (..., E + P)


def predict_word(parts, architecture, hidden, projected):
    """The head after the LSTM, the same for all: (merge: + image; attention: beside the context
    vector, `projected` [B, [T,] D]) -> Dense -> softmax."""
    if architecture == "attention":
        hidden = ops.concatenate([hidden, projected], axis=-1)
    if architecture == "merge":
        hidden = hidden + (ops.expand_dims(projected, 1) if len(hidden.shape) == 3 else projected)
    return parts["next_word"](parts["decoder"](hidden))


def _forward(parts, architecture, image, tokens, last_step_only=False):
    """The forward pass over captions, shared by the sequence and the prefix formulations."""
    if architecture == "attention":
        return _attend_forward(parts, image, tokens, last_step_only)
    projected = project_image(parts, image)                                  # (B, P)
    embedded = parts["caption_dropout"](parts["embedding"](tokens))          # (B, T, E)
    # Padding (id 0) is skipped: the state carries over it, so pre-padded prefixes read as
    # unpadded ones. Passed explicitly: the masks of Keras layers do not survive the ops below.
    mask = ops.not_equal(tokens, 0)                                          # (B, T)
    inputs = step_input(architecture, embedded, projected)                   # (B, T, E [+ P])
    if architecture == "pre-inject":  # the image read first, its output dropped (not its state)
        inputs = ops.concatenate([ops.expand_dims(projected, 1), inputs], 1)  # (B, 1 + T, E)
        mask = ops.concatenate([ops.ones_like(mask[:, :1]), mask], 1)       # (B, 1 + T)
        hidden = parts["lstm"](inputs, mask=mask)[:, 1:]                     # (B, T, units)
    else:  # the image as the state for init-inject; zeros, Keras's default, for the others
        state = initial_state(parts, architecture, projected) if architecture == "init-inject" \
            else None
        hidden = parts["lstm"](inputs, mask=mask, initial_state=state)       # (B, T, units)
    if last_step_only:  # prefixes are pre-padded, so the last step is the last word
        hidden = hidden[:, -1, :]                                            # (B, units)
    return predict_word(parts, architecture, hidden, projected)              # (B, [T,] V)


def _attend_forward(parts, image, tokens, last_step_only):
    """The attention model's forward pass: the LSTM attends over the grid before every word."""
    grid = project_image(parts, image)                                       # (B, P, D)
    embedded = parts["caption_dropout"](parts["embedding"](tokens))          # (B, T, E)
    h, c = initial_state(parts, "attention", grid)                           # (B, units) each
    hidden, contexts = parts["attention_lstm"](grid, embedded, h, c, ops.not_equal(tokens, 0))
    if last_step_only:                                                       # pre-padded prefixes
        hidden, contexts = hidden[:, -1], contexts[:, -1]                    # (B, units), (B, D)
    return predict_word(parts, "attention", hidden, contexts)                # (B, [T,] V)


def prefix_model(model, prefix_length):
    """The seed projects' formulation with `model`'s layers and weights: (features, pre-padded
    prefix [B, prefix_length]) -> next-word probabilities [B, V]."""
    image = keras.Input(model.input[0].shape[1:], name="image")
    prefix = keras.Input((prefix_length,), dtype="int32", name="prefix")
    return keras.Model([image, prefix], _forward(model_parts(model), architecture_of(model),
                                                 image, prefix, last_step_only=True))


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


# Where draw_model's arrow from the image goes, and what it says, per architecture.
_IMAGE_ENTERS = {"merge": ("decoder", "+ image,\nat every step"),
                 "init-inject": ("lstm", "initial state"),
                 "pre-inject": ("lstm", "first input, before <start>"),
                 "par-inject": ("lstm", "beside every word"),
                 "attention": ("attention_lstm",
                               "its mean: initial state;\nattended before every word")}


def draw_model(model):
    """A caption model as a picture: the two branches, where the image enters, and each layer's
    output shape."""
    import matplotlib.pyplot as plt

    architecture = architecture_of(model)
    names = layer_names(architecture)  # for attention, init_state and attention_lstm take the
    # places of image_dense and lstm
    column = dict(zip(names, (0, 0, 0, 1, 1, 1, 0.5, 0.5)))
    row = dict(zip(names, (0, 1, 2, 0, 1, 2, 3.3, 4.3)))
    fig, ax = plt.subplots(figsize=(9, 6.5))
    boxes = {}
    for name in names:
        layer = model.get_layer(name)
        x, y = column[name], -row[name]
        shape = tuple(keras.tree.flatten(layer.output)[0].shape)  # attention_lstm: its states
        label = f"{name} ({type(layer).__name__})\n{shape}"
        boxes[name] = ax.text(x, y, label, ha="center", va="center", bbox={
            "boxstyle": "round", "facecolor": "#dbe9f6" if x != 0.5 else "#f6e3db"})

    def arrow(a, b, start, end, **style):
        """From box a to box b, at points given as fractions of each box (so an arrow meets a
        box at its edge however wide its text); shrunk past the boxes' rounded padding."""
        ax.annotate("", end, xycoords=boxes[b], xytext=start, textcoords=boxes[a],
                    arrowprops={"arrowstyle": "->", "shrinkA": 5, "shrinkB": 5, **style})

    for a, b in [(names[5], "decoder")] + [(names[i], names[i + 1]) for i in (0, 1, 3, 4, 6)]:
        arrow(a, b, (0.5, 0), (0.5, 1))
    target, how = _IMAGE_ENTERS[architecture]
    image = {"color": "#b5562a", "lw": 2}
    if target != "decoder":  # sideways into the LSTM
        arrow(names[2], target, (1, 0.5), (0, 0.5), **image)
        ax.text(0.5, -row[target] + 0.3, how, ha="center", va="bottom", color="#b5562a")
    else:
        arrow(names[2], target, (0.5, 0), (0.5, 1), **image)
        ax.text(0.2, -2.95, how, ha="right", va="center", color="#b5562a")  # beside the arrow
    ax.text(0, 0.6, "image features", ha="center", weight="bold")
    ax.text(1, 0.6, "caption so far", ha="center", weight="bold")
    ax.set_title(f"{architecture} (image in orange)")
    ax.set(xlim=(-0.5, 1.5), ylim=(-4.8, 1))
    ax.axis("off")
    return fig


@keras.saving.register_keras_serializable(package="utils")
class SmoothedCaptionLoss(keras.losses.Loss):
    """Cross-entropy against sparse targets smoothed towards the uniform distribution (label
    smoothing, as Keras's CategoricalCrossentropy does for one-hot targets), averaged over the
    real tokens only: padding targets (id 0) count for nothing."""

    def __init__(self, smoothing=0.1, **kwargs):
        super().__init__(**kwargs)
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        log_probs = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        target = ops.expand_dims(ops.cast(y_true, "int32"), -1)
        nll = -ops.squeeze(ops.take_along_axis(log_probs, target, axis=-1), -1)
        per_word = (1 - self.smoothing) * nll - self.smoothing * ops.mean(log_probs, axis=-1)
        real = ops.cast(ops.not_equal(y_true, 0), per_word.dtype)
        # Scaled so that Keras's mean over all positions is the mean over the real tokens.
        return per_word * real * ops.cast(ops.size(real), real.dtype) / ops.maximum(ops.sum(real), 1)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


def compile_model(model, training=TrainingConfig()):
    """Adam and cross-entropy over the real tokens only (padding targets, id 0, ignored), with
    sparse targets: never a one-hot matrix. Also compiles the prefix formulation."""
    loss = (SmoothedCaptionLoss(training.label_smoothing) if training.label_smoothing
            else keras.losses.SparseCategoricalCrossentropy(ignore_class=0))
    model.compile(optimizer=keras.optimizers.Adam(training.learning_rate, clipnorm=5.0), loss=loss,
                  jit_compile=training.xla)
    return model


def feature_statistics(features, rows, chunk=PIECE_ROWS):
    """Mean and variance of the feature vectors `rows` (each image counted once, however many
    captions it has; a grid's every position) for the model's Normalization layer. Variances are
    floored so that a dimension constant in training cannot explode on a new image. The table is
    read `chunk` rows at a time, twice (mean, then variance): a memory-mapped cache is never read
    whole."""
    rows = np.unique(rows)
    chunks = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]
    count = len(rows) * int(np.prod(features.shape[1:-1]))  # vectors: images x positions

    def vectors(piece):  # (images [x positions], dim) as float64
        return np.asarray(features[piece], "float64").reshape(-1, features.shape[-1])

    mean = sum(vectors(c).sum(0) for c in chunks) / count
    variance = sum(((vectors(c) - mean) ** 2).sum(0) for c in chunks) / count
    return mean, np.maximum(variance, 0.01 * variance.mean() + 1e-12)


# ---------------------------------------------------------------------------------------------
# Data: tf.data from cached features and encoded captions
# ---------------------------------------------------------------------------------------------

def encode_captions(prepared, vocab, split, feature_names, directory=None):
    """(image row [M], tokens [M, vocab.sequence_length]) for every caption of `split` whose image
    has features; captions of images without features (skipped as unreadable) are left out.
    With `directory`, both are written there (`<split>-rows.npy`, `<split>-tokens.npy`,
    atomically) and returned memory-mapped, for training to stream them."""
    row = {name: i for i, name in enumerate(feature_names)}
    pairs = [(row[name], vocab.encode(caption)) for name in prepared.names(split) if name in row
             for caption in prepared.images[name]["captions"]]
    tokens = np.zeros((len(pairs), vocab.sequence_length), "int32")
    for i, (_, ids) in enumerate(pairs):
        tokens[i, :len(ids)] = ids
    rows = np.array([r for r, _ in pairs], "int32")
    if directory is None:
        return rows, tokens
    paths = (Path(directory) / f"{split}-rows.npy", Path(directory) / f"{split}-tokens.npy")
    for path, array in zip(paths, (rows, tokens)):
        save_npy(path, array)
    return tuple(np.load(path, mmap_mode="r") for path in paths)


class _GraphTable:
    """A table (2-D, or 1-D) as tf.data reads it, a few rows at a time.

    A memory-mapped `.npy` (a feature cache, encoded captions on disk) is read in place through
    TensorFlow's ImmutableConst, which maps the file: its pages belong to the page cache, not to
    the process, and the pipeline's graph holds only the file's name, so it stays small enough to
    serialise (tf.distribute, the tf.data service) whatever the table's size. An array in memory
    (tests, an external `.npz`) becomes a constant. Either way rows are gathered inside the graph:
    no Python, no `py_function`, no lock held while reading.
    """

    def __init__(self, array):
        self.shape, self.dtype = array.shape, tf.as_dtype(array.dtype)
        self.width = int(np.prod(array.shape[1:], dtype="int64"))
        # Only a whole mapped file is read in place: a view of one has its parent's offset.
        self.path = str(array.filename) if isinstance(array, np.memmap) and isinstance(
            array.base, mmap.mmap) and array.flags.c_contiguous else None
        if self.path is not None:
            if not _MAPPED_FILES_STAY_MAPPED:
                warnings.warn(f"TensorFlow had started before utils.model was imported: {self.path}"
                              " will be copied into memory once, when training starts (import "
                              "utils.model before running TensorFlow to avoid it)", RuntimeWarning,
                              stacklevel=3)
            self.start = array.offset // array.itemsize  # the .npy header, in elements
            self.size = self.start + array.size
        else:
            self.constant = tf.constant(np.ascontiguousarray(array))

    def gather(self, rows):
        """table[rows], inside a tf.data function."""
        if self.path is None:
            return tf.gather(self.constant, rows)
        flat = tf.raw_ops.ImmutableConst(dtype=self.dtype, shape=[self.size],
                                         memory_region_name=self.path)
        index = (self.start + tf.cast(rows, tf.int64)[:, None] * self.width
                 + tf.range(self.width, dtype=tf.int64))                        # (B, width)
        return tf.reshape(tf.gather(flat, index), [-1, *self.shape[1:]])        # (B, ...)


def caption_dataset(features, rows, tokens, batch_size=64, shuffle=True, seed=0, bucket_width=4,
                    epochs=(0, 1)):
    """Batches of ((features, input tokens), target tokens), padded only to each batch's longest.

    Inputs are a caption without its last token, targets the caption shifted by one: the model
    predicts every next word at once. Captions of similar length are batched together (length
    buckets `bucket_width` tokens wide; 0 turns this off) because the LSTM steps through every
    padded position: on Flickr8k a random batch of 64 pads to about 25 tokens, a bucket to about 14.
    `epochs` = (first, end): the batches of those epochs one after another, each epoch's order
    drawn from (seed, epoch) alone, so that a run resumed at epoch k sees what an uninterrupted
    run would (fit it with steps_per_epoch=batch_count(...)).

    `features`, `rows` and `tokens` may be memory-mapped (`np.load(..., mmap_mode="r")`): they
    are then read batch by batch, and memory grows with the batch, not with the dataset.
    """
    table, rows_table, tokens_table = map(_GraphTable, (features, rows, tokens))
    count = len(tokens)
    boundaries = _bucket_boundaries(tokens, bucket_width) if bucket_width else None

    def one_epoch(epoch):
        order = tf.data.Dataset.range(count).batch(PIECE_ROWS)
        if shuffle:  # a permutation computed index by index: nothing of the dataset's size
            order = order.map(lambda i: tf.random.experimental.index_shuffle(
                i, tf.stack([tf.constant(seed, tf.int64), epoch]), count - 1))
        data = order.map(lambda i: (rows_table.gather(i), tokens_table.gather(i))).unbatch()
        if not bucket_width:
            return data.batch(batch_size)
        return data.bucket_by_sequence_length(
            lambda row, caption: tf.reduce_sum(tf.cast(caption > 0, tf.int32)),
            boundaries, [batch_size] * (len(boundaries) + 1))

    def to_inputs(row, caption):
        length = tf.reduce_max(tf.reduce_sum(tf.cast(caption > 0, tf.int32), axis=1))
        caption = caption[:, :length]
        image = tf.cast(table.gather(row), tf.float32)                           # (B, F)
        return (image, caption[:, :-1]), caption[:, 1:]

    first, end = epochs
    batches = (tf.data.Dataset.range(first, end).flat_map(one_epoch)
               .map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE))
    # Bucketing hides how many batches an epoch holds; it is fixed (each bucket's captions in
    # full batches, then its remainder), and Keras, told it, shows a known number of steps.
    return batches.apply(tf.data.experimental.assert_cardinality(
        (end - first) * batch_count(tokens, batch_size, bucket_width))).prefetch(tf.data.AUTOTUNE)


def _bucket_boundaries(tokens, bucket_width):
    """Caption lengths (in tokens) where a new bucket starts."""
    return list(range(bucket_width + 1, tokens.shape[1] + 1, bucket_width))


def _caption_lengths(tokens):
    """Real tokens per caption, PIECE_ROWS captions at a time (the table may be mapped)."""
    return np.concatenate([np.zeros(0, "int64")] + [(tokens[i:i + PIECE_ROWS] > 0).sum(1)
                                                    for i in range(0, len(tokens), PIECE_ROWS)])


def batch_count(tokens, batch_size, bucket_width=4):
    """How many batches `caption_dataset` makes of `tokens` per epoch."""
    if not bucket_width:
        return -(-len(tokens) // batch_size)
    # tf.data puts a caption of length L in the bucket of the boundaries <= L.
    buckets = np.searchsorted(_bucket_boundaries(tokens, bucket_width), _caption_lengths(tokens),
                              side="right")
    return int(sum(-(-n // batch_size) for n in np.bincount(buckets) if n))


@dataclass
class CaptionData:
    """The train and val captions of a dataset, encoded, with the feature table they index (as
    given: a memory-mapped cache stays on disk, and training streams it)."""
    features: np.ndarray  # [images, F]
    train: tuple          # (image rows [M], tokens [M, T])
    val: tuple

    @classmethod
    def encode(cls, prepared, vocab, names, features, directory=None):
        """With `directory`, the encoded captions are written there and memory-mapped."""
        return cls(features, *(encode_captions(prepared, vocab, split, names, directory)
                               for split in ("train", "val")))

    def counts(self):
        """Images and captions per split, as the run record keeps them."""
        return {split: {"images": int(len(np.unique(rows))), "captions": int(len(rows))}
                for split, (rows, _) in (("train", self.train), ("val", self.val))}

    def feature_statistics(self):
        return feature_statistics(self.features, self.train[0])

    def datasets(self, batch_size, seed=0, epochs=(0, 1)):
        """(shuffled training batches of `epochs` (first, end), validation batches in order)."""
        return (caption_dataset(self.features, *self.train, batch_size, seed=seed, epochs=epochs),
                caption_dataset(self.features, *self.val, batch_size, shuffle=False))


# ---------------------------------------------------------------------------------------------
# Training runs: resumable, and saved with everything needed to caption a new photo later
# ---------------------------------------------------------------------------------------------

class BestModelCheckpoint(keras.callbacks.Callback):
    """Keeps the model with the lowest validation loss in `path`, written atomically so that an
    interruption during a save never leaves a broken file."""

    def __init__(self, path, best=np.inf):
        super().__init__()
        self.path, self.best = Path(path), best

    def on_epoch_end(self, epoch, logs=None):
        if logs["val_loss"] < self.best:
            self.best = logs["val_loss"]
            with atomic_path(self.path) as tmp:
                self.model.save(tmp)


def read_history(run_dir):
    """Per-epoch logs of a run, one dict per epoch (the last row wins if an epoch was logged twice)."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = {int(r["epoch"]): {k: float(v) for k, v in r.items()} for r in csv.DictReader(f)}
    return [rows[e] for e in sorted(rows)]


class RandomStateBackup(keras.callbacks.Callback):
    """Keeps the dropout layers' random state beside BackupAndRestore's weights, which leave it
    out: without it a resumed run draws other dropout masks than an uninterrupted one."""

    def __init__(self, backup_dir):
        super().__init__()
        self.path = Path(backup_dir) / "random_state.json"

    def _states(self):
        return [v for v in self.model.variables if v.path.endswith("seed_generator_state")]

    def on_train_begin(self, logs=None):
        if self.path.is_file():
            for variable, value in zip(self._states(), read_json(self.path)):
                variable.assign(np.array(value, dtype=variable.dtype))

    def on_epoch_end(self, epoch, logs=None):
        if self.path.is_file():  # the epoch before's, for a damaged checkpoint (double checkpoint)
            shutil.copy(self.path, f"{self.path}.bkp")
        write_json(self.path, [np.asarray(v).tolist() for v in self._states()])


class ReplayedCounters(keras.callbacks.Callback):
    """Gives a resumed run's early stopping and learning-rate schedule the counters they had
    (epochs without progress, best loss so far), by replaying the logged epochs through them.
    Listed after them: their own on_train_begin resets the counters first."""

    def __init__(self, logged_epochs, callbacks):
        super().__init__()
        self.logged_epochs, self.callbacks = logged_epochs, callbacks

    def on_train_begin(self, logs=None):
        for callback in self.callbacks:
            model = callback.model
            # The replay must not touch the real model: its learning rate was restored with it.
            callback.set_model(types.SimpleNamespace(optimizer=types.SimpleNamespace(
                learning_rate=1.0), stop_training=False))
            for row in self.logged_epochs:
                callback.model.optimizer.learning_rate = row["learning_rate"]
                callback.on_epoch_end(int(row["epoch"]), row)
            callback.set_model(model)


def check_training_state(run_dir):
    """Before a rerun resumes, drop or refuse what an interruption may have broken: a history row
    cut short is dropped (with a warning), and a checkpoint that cannot be read falls back to the
    one before it (Keras's double checkpoint); with neither whole, the error says how to go on.
    An epoch the checkpoint holds but the history lost (the interruption came between the two
    writes) is trained again from the checkpoint before it, so that no epoch goes unlogged."""
    history = Path(run_dir) / "history.csv"
    text = history.read_text() if history.is_file() else ""
    if text and not text.endswith("\n"):
        kept = text[:text.rfind("\n") + 1]
        with atomic_path(history) as tmp:
            tmp.write_text(kept)
        warnings.warn(f"{history}: its last row was cut short ({text[len(kept):]!r}), dropped; "
                      "that epoch is trained again", stacklevel=2)
    latest = Path(run_dir) / "backup" / "latest.weights.h5"
    if latest.exists() and not _whole_h5(latest):
        if not _whole_h5(Path(f"{latest}.bkp")):
            raise RuntimeError(f"{latest} is damaged and no earlier checkpoint is whole: delete "
                               f"{latest.parent} to train this run again from its first epoch")
        warnings.warn(f"{latest} is damaged; resuming from the checkpoint of the epoch before",
                      stacklevel=2)
        _restore_epoch_before(run_dir)
    logged = {int(h["epoch"]) for h in read_history(run_dir)}
    lost = [epoch for epoch in range(resumed_epoch(run_dir)) if epoch not in logged]
    if lost == [resumed_epoch(run_dir) - 1] and _whole_h5(Path(f"{latest}.bkp")):
        warnings.warn(f"{history}: epoch {lost[0] + 1} was trained but its row is lost; it is "
                      "trained again, from the checkpoint of the epoch before", stacklevel=2)
        _restore_epoch_before(run_dir)
    elif lost:
        warnings.warn(f"{history}: the rows of epochs {', '.join(str(e + 1) for e in lost)} are "
                      f"lost, and no checkpoint before them is kept: training resumes after them, "
                      "its early stopping and learning-rate schedule without them", stacklevel=2)


def _restore_epoch_before(run_dir):
    """What BackupAndRestore(double_checkpoint=True) does at the start of training with a damaged
    checkpoint, done here so that `resumed_epoch` reads the epoch training will really resume at."""
    backup = Path(run_dir) / "backup"
    for path in (backup / "latest.weights.h5", _backup_metadata(run_dir),
                 backup / "random_state.json"):
        if Path(f"{path}.bkp").is_file():
            shutil.copy(f"{path}.bkp", path)


def _backup_metadata(run_dir):
    return Path(run_dir) / "backup" / "training_metadata.json"


def resumed_epoch(run_dir):
    """The epoch an interrupted run resumes at: BackupAndRestore's record of finished epochs."""
    path = _backup_metadata(run_dir)
    return int(read_json(path)["epoch"]) if path.is_file() else 0


def _whole_h5(path):
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
        return True
    except (OSError, KeyError, RuntimeError):
        return False


# Where training runs (tf.distribute): one device, or every GPU of this machine. Several machines
# (MultiWorkerMirroredStrategy) are left out: Keras 3's `fit` fails under it, first reducing a
# batch across workers (keras-team/keras#20585), then its logs (docs/how-it-works.md, stage 4).
STRATEGIES = (None, "mirrored")


def distribution_strategy(name=None):
    """TensorFlow's distribution strategy `name`: None, one device (TensorFlow's default);
    "mirrored", every GPU of this machine (MirroredStrategy; without a GPU, its CPU devices).
    Build the model in its `scope()`; Keras's `fit` then splits each batch across the devices."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")
    if name == "mirrored":  # every GPU; without one, every CPU device (tests configure two)
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.get_strategy()


def train_caption_model(model, data, run_dir, training=TrainingConfig(), extra_callbacks=(),
                        verbose=1):
    """Fit `model` on `data` (CaptionData) as `training` says, with the best checkpoint, early
    stopping, a CSV history and, unless `training.lr_plateau_factor` is None, the learning rate
    multiplied by it after each epoch without a better validation loss. An interrupted run resumes
    from its last finished epoch (BackupAndRestore)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_training_state(run_dir)
    first, history = resumed_epoch(run_dir), read_history(run_dir)
    logged = [h for h in history if h["epoch"] < first]
    best_so_far = min((h["val_loss"] for h in history), default=np.inf)
    counted = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=training.patience)]
    if training.lr_plateau_factor is not None:  # before the CSV log, so that it logs the rate
        counted.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=training.lr_plateau_factor, patience=1, min_lr=1e-5))
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), double_checkpoint=True),
        RandomStateBackup(run_dir / "backup"),
        BestModelCheckpoint(run_dir / "model.keras", best_so_far),
        *counted, ReplayedCounters(logged, counted),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        *extra_callbacks]
    train_data, val_data = data.datasets(training.batch_size, training.seed,
                                         (first, training.epochs))
    model.fit(train_data, validation_data=val_data, epochs=training.epochs, callbacks=callbacks,
              steps_per_epoch=batch_count(data.train[1], training.batch_size),
              shuffle=False, verbose=verbose)  # caption_dataset shuffles
    history = read_history(run_dir)
    write_json(run_dir / "history.json", history)
    return history
