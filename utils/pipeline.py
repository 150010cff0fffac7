"""Stage 4's input: captions encoded once, and tf.data batches streamed from the feature table.

The feature cache and the encoded captions may be memory-mapped `.npy` files: training reads them
batch by batch inside TensorFlow's graph (`_GraphTable`), so memory follows the batch, not the
dataset, at any size. One TensorFlow setting makes that true (`_fold_no_mapped_files`): it must be
written before TensorFlow starts, so it is applied when this module is first imported, which
`utils` does before it loads any module of stages 4 and 5 (utils/__init__.py).
"""
import mmap
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from .files import save_npy
from .record import DataCounts, SplitCount

__all__ = ["PIECE_ROWS", "feature_statistics", "encode_captions", "caption_dataset",
           "batch_count", "CaptionData"]

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
                warnings.warn(f"TensorFlow had started before utils.pipeline was imported: "
                              f"{self.path} will be copied into memory once, when training "
                              "starts (import utils.pipeline before running TensorFlow to avoid "
                              "it)", RuntimeWarning, stacklevel=3)
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
                    epochs=(0, 1), teachers=None):
    """Batches of ((features, input tokens), target tokens), padded only to each batch's longest.

    Inputs are a caption without its last token, targets the caption shifted by one: the model
    predicts every next word at once. Captions of similar length are batched together (length
    buckets `bucket_width` tokens wide; 0 turns this off) because the LSTM steps through every
    padded position: on Flickr8k a random batch of 64 pads to about 25 tokens, a bucket to about 14.
    `epochs` = (first, end): the batches of those epochs one after another, each epoch's order
    drawn from (seed, epoch) alone, so that a run resumed at epoch k sees what an uninterrupted
    run would (fit it with steps_per_epoch=batch_count(...)).

    `teachers` (word ids [M, T - 1, k], their probabilities [M, T - 1, k]: utils.distillation)
    says what a student's teachers say at each target position; each target is then [reference
    id, k ids, k probabilities] (utils.DistillationLoss reads them).

    `features`, `rows`, `tokens` and `teachers` may be memory-mapped (`np.load(...,
    mmap_mode="r")`): they are then read batch by batch, and memory grows with the batch, not with
    the dataset.
    """
    table = _GraphTable(features)
    caption_tables = [_GraphTable(t) for t in (rows, tokens, *(teachers or ()))]
    count = len(tokens)
    boundaries = _bucket_boundaries(tokens, bucket_width) if bucket_width else None

    def one_epoch(epoch):
        order = tf.data.Dataset.range(count).batch(PIECE_ROWS)
        if shuffle:  # a permutation computed index by index: nothing of the dataset's size
            order = order.map(lambda i: tf.random.experimental.index_shuffle(
                i, tf.stack([tf.constant(seed, tf.int64), epoch]), count - 1))
        data = order.map(lambda i: tuple(t.gather(i) for t in caption_tables)).unbatch()
        if not bucket_width:
            return data.batch(batch_size)
        return data.bucket_by_sequence_length(
            lambda row, caption, *taught: tf.reduce_sum(tf.cast(caption > 0, tf.int32)),
            boundaries, [batch_size] * (len(boundaries) + 1))

    def to_inputs(row, caption, *taught):
        length = tf.reduce_max(tf.reduce_sum(tf.cast(caption > 0, tf.int32), axis=1))
        caption = caption[:, :length]
        image = tf.cast(table.gather(row), tf.float32)                           # (B, F)
        targets = caption[:, 1:]                                                 # (B, T)
        if taught:  # ids and probabilities: (B, T, k) each
            said = [tf.cast(t[:, :length - 1], tf.float32) for t in taught]
            targets = tf.concat([tf.cast(targets, tf.float32)[..., None], *said], -1)  # (B, T, 1+2k)
        return (image, caption[:, :-1]), targets

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
    teachers: tuple = None  # a student's: (train, val), each what utils.with_teacher_targets gives

    @classmethod
    def encode(cls, prepared, vocab, names, features, directory=None):
        """With `directory`, the encoded captions are written there and memory-mapped."""
        return cls(features, *(encode_captions(prepared, vocab, split, names, directory)
                               for split in ("train", "val")))

    def counts(self):
        """Images and captions per split, as the run record keeps them."""
        return DataCounts(*(SplitCount(int(len(np.unique(rows))), int(len(rows)))
                            for rows, _ in (self.train, self.val)))

    def feature_statistics(self):
        return feature_statistics(self.features, self.train[0])

    def datasets(self, batch_size, seed=0, epochs=(0, 1)):
        """(shuffled training batches of `epochs` (first, end), validation batches in order)."""
        train_taught, val_taught = self.teachers or (None, None)
        return (caption_dataset(self.features, *self.train, batch_size, seed=seed, epochs=epochs,
                                teachers=train_taught),
                caption_dataset(self.features, *self.val, batch_size, shuffle=False,
                                teachers=val_taught))
