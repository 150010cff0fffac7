"""A Transformer decoder (Vaswani et al. 2017), as the TensorFlow captioning tutorial and keras-io's
example caption with one, without an LSTM:

    transformer  blocks of causal self-attention over the caption so far, cross-attention over the
                 image (the grid's positions when there is a grid, else the pooled vector
                 projected into a few positions) and a feed-forward layer

Each block is three small sublayers, as the tutorial writes them: `CausalSelfAttention`,
`CrossAttention` and `FeedForward`, each pre-norm (as GPT-2 and nanoGPT order it) and added back
to its input. A sublayer's `call` reads any number of new positions; decoding calls it with one
position, and the self-attention with a cache of the earlier positions' keys and values, so a
step attends from one new position only and computes exactly what training computes there. The
decoding state is the step's position and that cache, one (keys, values) pair a block, of a fixed
size (every position a caption can reach; those not yet said masked), so that a compiled search's
loop carries tensors of one shape from step to step.
"""
import keras
from keras import layers, ops

from .base import CaptionModel, architecture

__all__ = ["BLOCK_DROPOUT", "attention", "HeadsProjection", "AttentionSublayer", "CausalSelfAttention",
           "CrossAttention", "FeedForward", "DecoderBlock", "Transformer"]

# Dropout inside the Transformer's blocks, on each residual branch (the TF tutorial's rate);
# DROPOUT (config.dropout) acts on its inputs, the image and the words, as in the LSTMs.
BLOCK_DROPOUT = 0.1


def attention(query, keys, values, mask=None):
    """Scaled dot-product attention, the one arithmetic of every attention here, training and
    decoding alike: queries [B, T, H, K] read keys and values [B, S, H, K]. `mask` [T, S]: which
    keys each query may read. Returns (read [B, T, H, K], weights [B, H, T, S]).

    Written out rather than Keras's MultiHeadAttention, whose cached step would need its private
    `_compute_attention` (its signature changed between Keras 3.3 and 3.15)."""
    scores = ops.einsum("bthk,bshk->bhts", query, keys) / ops.sqrt(
        ops.cast(ops.shape(keys)[-1], query.dtype))                              # (B, H, T, S)
    if mask is not None:
        scores = ops.where(mask, scores, ops.cast(-1e9, scores.dtype))
    # The softmax written out: ops.softmax warns of an axis of size 1 (the first word's keys).
    weights = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True))
    weights = weights / ops.sum(weights, axis=-1, keepdims=True)
    return ops.einsum("bhts,bshk->bthk", weights, values), weights


class HeadsProjection(layers.EinsumDense):
    """Positions [B, T, units] projected into `heads` heads of units / heads [B, T, H, K]."""

    def __init__(self, units, heads, **kwargs):
        super().__init__("btd,dhk->bthk", (None, heads, units // heads), bias_axes="hk", **kwargs)


class AttentionSublayer(layers.Layer):
    """What both attention sublayers have: a layer norm of what asks, the query, key and value
    projections into heads, the projection of the heads' reading back to `units`, and dropout on
    the residual branch."""

    def __init__(self, units, heads, **kwargs):
        super().__init__(**kwargs)
        self.norm = layers.LayerNormalization(name="norm")
        self.query, self.key, self.value = (HeadsProjection(units, heads, name=n)
                                            for n in ("query", "key", "value"))
        self.merge = layers.EinsumDense("bthk,hkd->btd", (None, units), bias_axes="d", name="merge")
        self.dropout = layers.Dropout(BLOCK_DROPOUT)

    def added(self, x, read, training=False):
        """x [B, T, units] plus the heads' reading [B, T, H, K], projected back."""
        return x + self.dropout(self.merge(read), training=training)


@keras.saving.register_keras_serializable(package="utils")
class CausalSelfAttention(AttentionSublayer):
    """Each position reads the caption up to itself. Decoding reads one position at a time with
    `cache`: the keys and values of every position a caption can reach [B, L, H, K], of which
    those before `position` [B] are filled; returned with this position's written in."""

    def call(self, x, cache=None, position=None, training=False):
        normed = self.norm(x)                                                    # (B, T, units)
        keys, values = self.key(normed), self.value(normed)                      # (B, T, H, K)
        if cache is None:  # a whole caption: each position reads itself and those before
            length = ops.shape(x)[1]
            earlier = ops.arange(length)[None] <= ops.arange(length)[:, None]   # (T, T)
        else:  # one position, written into the cache at `position`
            reached = ops.arange(ops.shape(cache[0])[1])[None] <= position[:, None]  # (B, L)
            here = (ops.arange(ops.shape(cache[0])[1])[None] == position[:, None])[..., None, None]
            keys, values = (ops.where(here, new, old)
                            for old, new in zip(cache, (keys, values)))          # (B, L, H, K)
            earlier = reached[:, None, None]                                     # (B, 1, 1, L)
        read, _ = attention(self.query(normed), keys, values, earlier)
        return self.added(x, read, training), (keys, values)


@keras.saving.register_keras_serializable(package="utils")
class CrossAttention(AttentionSublayer):
    """Each position reads the image's memory, whose keys and values (`keys_values`) are
    computed once an image. Also returns its weights over the memory [B, T, S], mean of heads."""

    def keys_values(self, memory):
        """The memory [B, S, units] as keys and values [B, S, H, K]."""
        return self.key(memory), self.value(memory)

    def call(self, x, keys, values, training=False):
        read, weights = attention(self.query(self.norm(x)), keys, values)
        return self.added(x, read, training), ops.mean(weights, axis=1)          # (B, T, S)


@keras.saving.register_keras_serializable(package="utils")
class FeedForward(layers.Layer):
    """Each position on its own through two dense layers, four times wider between them."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.norm = layers.LayerNormalization(name="norm")
        self.wide = layers.Dense(4 * units, activation="gelu", name="wide")
        self.back = layers.Dense(units, name="back")
        self.dropout = layers.Dropout(BLOCK_DROPOUT)

    def call(self, x, training=False):
        return x + self.dropout(self.back(self.wide(self.norm(x))), training=training)


@keras.saving.register_keras_serializable(package="utils")
class DecoderBlock(layers.Layer):
    """One pre-norm decoder block: causal self-attention, cross-attention, feed-forward."""

    def __init__(self, units, heads, **kwargs):
        super().__init__(**kwargs)
        self.self_attention = CausalSelfAttention(units, heads, name="self_attention")
        self.cross_attention = CrossAttention(units, heads, name="cross_attention")
        self.feed_forward = FeedForward(units, name="feed_forward")

    def call(self, x, memory, cache=None, position=None, training=False):
        """Positions x [B, T, units] after the block, given the memory's keys and values (and in
        decoding the cache and the position of x): (x, the cache with x's added, cross-attention
        weights)."""
        x, cache = self.self_attention(x, cache, position, training=training)
        x, weights = self.cross_attention(x, *memory, training=training)
        return self.feed_forward(x, training=training), cache, weights


@architecture("transformer")
class Transformer(CaptionModel):
    """The words (GloVe, projected to `units`, plus their positions' sinusoids) pass through
    `blocks` DecoderBlocks that each read the image's memory, then a last layer norm and the head
    every architecture has. The memory is the grid's positions (each projected, plus a learned
    vector of where it is) when the config gives `positions`, else the pooled vector projected
    into `memory_slots` positions. The maps notebook 05 draws are the cross-attention's weights,
    averaged over heads and blocks (where the decoder as a whole read)."""
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
        where = [self.grid_positions] if self.config.reads_grid else []
        return {"image": [self.feature_norm, self.image_dropout, self.image_dense, *where],
                "words": [self.embedding, self.word_dense, self.caption_dropout],
                "core": [*self.blocks, self.final_norm], "head": [self.decoder, self.next_word]}

    def memory(self, image, training=False):
        """The image as each block's cross-attention keys and values [B, S, H, K], flat."""
        projected = self.image_dense(self.standardised(image, training))
        if self.config.reads_grid:                                               # (B, P, units)
            memory = projected + self.grid_positions(ops.arange(self.config.positions))
        else:
            memory = ops.reshape(projected, (-1, self.config.memory_slots, self.config.units))
        return tuple(kv for block in self.blocks
                     for kv in block.cross_attention.keys_values(memory))

    def decode(self, tokens, memory, cache=None, position=None, training=False):
        """What the head reads [B, T, units] after words [B, T], the cache with them added, and the
        cross-attention maps [B, T, S] (mean of blocks). Decoding reads one word [B, 1] at
        `position` [B] with the cache of the words before it; training, whole captions."""
        x = self.word_dense(self.embedding(tokens))                              # (B, T, units)
        positions = ops.arange(ops.shape(tokens)[1]) if cache is None else position[:, None]
        x = self.caption_dropout(x + ops.cast(sinusoid(positions, self.config.units), x.dtype),
                                 training=training)
        caches, maps = [], []
        for i, block in enumerate(self.blocks):
            x, kv, weights = block(x, memory[2 * i:2 * i + 2],
                                   None if cache is None else cache[2 * i:2 * i + 2], position,
                                   training=training)
            caches += kv
            maps.append(weights)
        return self.final_norm(x), caches, ops.mean(ops.stack(maps), axis=0)

    def start(self, image, length, training=False):
        """(each block's memory keys and values, (position 0, each block's empty cache of keys
        and values for `length` positions [B, length, H, K]))."""
        memory = self.memory(image, training)
        empty = ops.repeat(ops.zeros_like(memory[0][:, :1]), length, axis=1)     # (B, L, H, K)
        position = ops.zeros_like(empty[:, 0, 0, 0], "int32")                    # (B,)
        return memory, [position, *[empty] * (2 * len(self.blocks))]

    def step(self, context, word, state):
        position, *cache = state
        x, cache, maps = self.decode(word[:, None], context, cache, position)   # (B, 1, units)
        return self.head(x[:, 0]), [position + 1, *cache], maps[:, 0] if self.attends else None

    def read(self, inputs, training=False):
        image, tokens = inputs
        return self.decode(tokens, self.memory(image, training), training=training)[0]


def sinusoid(positions, dim):
    """Vaswani et al.'s position vectors [..., dim] for integer positions [...]: any caption length,
    no weights, and a step's vector is the same as that position's in the whole caption."""
    rates = 1.0 / 10000.0 ** (ops.arange(0, dim, 2, dtype="float32") / dim)       # (dim / 2,)
    angles = ops.expand_dims(ops.cast(positions, "float32"), -1) * rates          # (..., dim / 2)
    return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)           # (..., dim)
