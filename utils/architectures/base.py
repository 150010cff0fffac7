"""What every caption model shares, and the registry that rebuilds one from its record.

Every architecture is a `CaptionModel`: a Keras model with the same word branch (Embedding ->
Dropout), the same standardised image (Normalization -> Dropout) and the same head (Dense, then
softmax), and three calls:

    start(image, length)       -> (what every step reads of the image, the first decoding state
                                   for captions of at most `length` steps)
    step(context, word, state) -> (next-word probabilities [B, V], the new state, attention
                                   weights over the image's positions [B, P] or None)
    call((image, captions))    -> next-word probabilities after every prefix [B, T, V] (training):
                                  the head on `read`, what the core made of every prefix

What the state is belongs to the family: an LSTM's (h, c), the Transformer's cache of keys and
values. `ARCHITECTURES` maps a record's architecture name to its class, so a new architecture is
one class and one decorator line, and `build_caption_model` rebuilds a model from its
`ModelConfig` as nanoGPT rebuilds `GPT(GPTConfig(...))`.
"""
import dataclasses

import keras
from keras import layers, ops

from ..record import ModelConfig

__all__ = ["ARCHITECTURES", "architecture", "architecture_class", "grid_architectures",
           "CaptionModel", "build_caption_model", "set_feature_statistics"]

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


def grid_architectures():
    """The architectures that can read a grid of positions (features [images, positions, dim]),
    as their classes say."""
    return tuple(name for name, cls in ARCHITECTURES.items() if cls.can_read_grid)


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
    [B, T]) -> next-word probabilities [B, T, V]; for a grid the features are [B, positions, F].

    `embedding_matrix`: [V, embedding_dim] initial word vectors (GloVe), else uniform random.
    `feature_stats`: (mean, variance) of the training features (see set_feature_statistics);
    without them the features are read as they are (a loaded run's weights bring its own).
    """
    cls = architecture_class(config.architecture)
    shape = (config.vocab_size, config.embedding_dim)
    if embedding_matrix is not None and tuple(embedding_matrix.shape) != shape:
        raise ValueError(f"the embedding matrix is {tuple(embedding_matrix.shape)}, the model "
                         f"needs {shape} (vocabulary size, embedding_dim)")
    if cls.reads_grid and not config.reads_grid:
        raise ValueError(f"{config.architecture} reads a grid of positions: give `positions`")
    if config.reads_grid and not cls.can_read_grid:
        raise ValueError(f"{config.architecture} reads pooled features: `positions` must be None")
    model = cls(config, embedding_matrix)
    # One symbolic call creates every weight, in the order of the layers (and gives the
    # summary its shapes: any batch, any caption length).
    model((keras.Input(config.image_shape), keras.Input((None,), dtype="int32")))
    if feature_stats is not None:
        set_feature_statistics(model, *feature_stats)
    return model


class CaptionModel(keras.Model):
    """What every architecture shares: the standardised image, the word branch and the head. A
    family creates its image branch and its core in `image_layers` and `core_layers` (called in
    the order the layers are made, which the random seed follows) and answers `start`, `step` and
    `call` (see the module's docstring)."""
    architecture = None   # its name in ARCHITECTURES, set by @architecture
    reads_grid = False    # True: features are always grids [B, positions, D]
    can_read_grid = False  # True: reads grids when its config gives `positions`
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

    def standardised(self, image, training=False):
        """The image's features on the training features' scale, dropped out in training."""
        return self.image_dropout(self.feature_norm(image), training=training)

    def embed_word(self, word):
        """One word of each caption [B] as its vector [B, E]: the embedding's table looked up
        directly, since a padding mask has no meaning for one word."""
        return ops.take(self.embedding.embeddings, word, axis=0)

    def head(self, hidden):
        """The next word's probabilities [B, [T,] V] from what the core made of the caption."""
        return self.next_word(self.decoder(hidden))

    # What each family says: its layers, what draw_model shows of them, `start`, `step`, `read`.
    def image_layers(self, config):
        raise NotImplementedError

    def core_layers(self, config):
        raise NotImplementedError

    def parts(self):
        """What draw_model shows, by branch ("image", "words", "core", "head"), each in order."""
        raise NotImplementedError

    def start(self, image, length, training=False):
        raise NotImplementedError

    def step(self, context, word, state):
        raise NotImplementedError

    def read(self, inputs, training=False):
        """What the head reads after every prefix of captions [B, T]: [B, T, D]."""
        raise NotImplementedError

    def call(self, inputs, training=False):
        return self.head(self.read(inputs, training))                            # (B, T, V)
