"""A run, or an ensemble of runs, as one TensorFlow SavedModel that captions photos on its own.

    export_captioner("models/flickr8k-pretrained", "exports/flickr8k-captioner")

writes a SavedModel whose serving signature takes a batch of encoded photos (tf.string: JPEG or
PNG bytes) and returns their captions (tf.string) and scores (the winning beam's log-probability
per word, as the decoding setting ranks them). Everything is inside: the reading of a photo as
utils.load_image reads it, the run's encoder and its input scaling, the decoder's weights, the
vocabulary, and the compiled search (utils.search) with the decoding setting. It loads with
`tf.saved_model.load` (or TF Serving) where this repository is not installed.

Reading a photo as load_image does, in TensorFlow ops: a JPEG decoded at the scale Pillow's
`draft` picks (libjpeg's own scaled decode, its accurate integer transform, as Pillow's), a PNG's
transparency composited on white in Pillow's integer arithmetic, then Pillow's bilinear resize
to the encoder's square: its filter coefficients computed as Resample.c computes them, in
fixed point, a horizontal then a vertical pass each rounded to 8 bits. Where load_image would
first reduce a very large photo (a PNG over 1,023 pixels on its short side, a JPEG over 8,191)
the export averages the same boxes in Pillow's integer arithmetic. A JPEG's EXIF orientation
turns it upright as Pillow's exif_transpose does; a PNG's (an eXIf chunk, rare) is not read.
"""
import functools
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from .captioning import Captioner
from .decoding import DEFAULT_DECODING
from .encoders import encoder_spec
from .files import atomic_folder, write_json
from .images import DECODE_SIZE
from .runs import run_folders
from .search import compiled_search

__all__ = ["export_captioner", "CAPTIONER_RECORD", "ExportedCaptioner", "read_photo"]

# The export's record, beside the SavedModel (TF Serving's place for extra files): what it is.
CAPTIONER_RECORD = Path("assets.extra") / "captioner.json"

# Pillow's fixed-point precision in resampling (Resample.c) and alpha compositing (AlphaComposite.c).
RESAMPLE_BITS = 22
COMPOSITE_BITS = 7
# Where a JPEG's EXIF Orientation is looked for: its first bytes (the segments before the image
# data; an APP1 segment is at most 64 KB), and at most this many entries of its first directory.
EXIF_SEARCH_BYTES = 1 << 17
MAX_EXIF_ENTRIES = 256
JPEG_SCALES = (8, 4, 2, 1)  # the reduced sizes libjpeg decodes at (1/8 ... 1), as draft tries them


class ExportedCaptioner(tf.Module):
    """What the SavedModel holds: the encoders, the decoder's models, the words and the search."""

    def __init__(self, captioner, setting):
        super().__init__(name="captioner")
        self.encoders = list(captioner.encoders)  # one per table of the decoder's input
        self.sizes = [source.input_size for source in captioner.sources]
        self.specs = [encoder_spec(source.encoder) for source in captioner.sources]
        decoder = captioner.decoder
        members = getattr(decoder, "members", (decoder,))
        self.models = [member.model for member in members]  # tracked: their weights are saved
        self.words = tf.constant(decoder.vocab.words)
        self.end_id = decoder.vocab.end_id
        width = sum(encoder.output_shape[-1] for encoder in self.encoders)
        self.search = compiled_search(decoder, setting.search,
                                      (*self.encoders[0].output_shape[1:-1], width))

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name="photos")],
                 autograph=False)
    def caption(self, photos):
        """{"captions": [n] strings, "scores": [n] float32} for encoded photos [n]."""
        tables = []
        for encoder, size, spec in zip(self.encoders, self.sizes, self.specs):
            pixels = tf.map_fn(lambda data, size=size: read_photo(data, size), photos,
                               fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32))
            tables.append(encoder(spec.preprocess(pixels), training=False))
        features = tf.concat(tables, axis=-1)                                  # (n, ..., width)
        ids, _, scores = self.search(features, tf.zeros(2, tf.int64))           # (n, steps)
        said = tf.math.cumsum(tf.cast(tf.equal(ids, self.end_id), tf.int32), axis=1) == 0
        words = tf.ragged.boolean_mask(tf.gather(self.words, ids), said)       # before <end>
        return {"captions": tf.strings.reduce_join(words, axis=1, separator=" "),
                "scores": tf.cast(scores, tf.float32)}


def export_captioner(run_or_runs, folder, setting=DEFAULT_DECODING):
    """Write the run (a folder) or runs (a list: one ensemble) with `setting` as a SavedModel in
    `folder`, replaced whole only once written; returns `folder`. A run trained on features made
    elsewhere cannot encode a photo: NoEncoderError says so."""
    captioner = Captioner.from_run(run_or_runs)
    module = ExportedCaptioner(captioner, setting)
    with atomic_folder(folder) as written:
        tf.saved_model.save(module, str(written), signatures={
            "serving_default": module.caption.get_concrete_function()})
        write_json(written / CAPTIONER_RECORD, {
            "runs": [run.name for run in run_folders(run_or_runs)], "decoding": setting.slug,
            "encoders": [{"encoder": source.encoder, "weights": source.weights,
                          "input_size": source.input_size} for source in captioner.sources],
            "vocabulary": captioner.config.vocabulary,
            "inputs": "photos: tf.string [n], JPEG or PNG bytes",
            "outputs": "captions: tf.string [n]; scores: float32 [n]"})
    return folder


def read_photo(data, size):
    """One encoded photo (JPEG or PNG bytes) as load_image reads it: [size, size, 3] float32 in
    [0, 255]."""
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff")
    is_png = tf.equal(tf.strings.substr(data, 0, 8), b"\x89PNG\r\n\x1a\n")
    tf.debugging.Assert(is_jpeg | is_png, ["a photo is neither a JPEG nor a PNG"])
    image = tf.cond(is_jpeg, lambda: _decoded_jpeg(data), lambda: _decoded_png(data))
    factor = tf.maximum(tf.reduce_min(tf.shape(image)[:2]) // DECODE_SIZE, 1)
    image = tf.cond(factor >= 2, lambda: _reduced(image, factor), lambda: image)
    if_jpeg = tf.cond(is_jpeg, lambda: _exif_orientation(data), lambda: tf.constant(1))
    image = _upright(image, if_jpeg)
    # Recent Pillow (13's Resample.c) resizes vertically first where the height shrinks by more
    # than twice what the width does, older Pillow always horizontally first; each pass rounds
    # to 8 bits, so the order shows. The export follows the Pillow it is made with.
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    vertical_first = (height > size) & (height - size > (width - size) * 2) \
        & tf.constant(pillow_may_resize_vertically_first())
    image = tf.cond(vertical_first,
                    lambda: _resampled(_resampled(image, size, axis=0), size, axis=1),
                    lambda: _resampled(_resampled(image, size, axis=1), size, axis=0))
    return tf.cast(image, tf.float32)


@functools.cache
def pillow_may_resize_vertically_first():
    """Whether the installed Pillow resizes a tall image's height before its width: a noise image
    60 pixels high and 20 wide, resized to 8 x 8 at once and one axis at a time, says which."""
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 20), dtype=np.uint8))
    at_once = np.asarray(noise.resize((8, 8), Image.BILINEAR))
    height_first = noise.resize((20, 8), Image.BILINEAR).resize((8, 8), Image.BILINEAR)
    return bool((np.asarray(height_first) == at_once).all())


def _decoded_jpeg(data):
    """RGB uint8 [h, w, 3] at the scale Pillow's draft((DECODE_SIZE, DECODE_SIZE)) decodes."""
    height, width = tf.unstack(tf.image.extract_jpeg_shape(data)[:2])
    scale = tf.minimum(width // DECODE_SIZE, height // DECODE_SIZE)
    # The largest scale not above it; 1 (the whole image) for a photo under DECODE_SIZE.
    branch = tf.argmax(tf.constant(JPEG_SCALES) <= tf.maximum(scale, 1))
    return tf.switch_case(tf.cast(branch, tf.int32), [
        lambda ratio=ratio: tf.io.decode_jpeg(data, channels=3, ratio=ratio,
                                              dct_method="INTEGER_ACCURATE")
        for ratio in JPEG_SCALES])


def _exif_orientation(data):
    """A JPEG's EXIF Orientation, 1 to 8 (1 where it has none, or another value), from its first
    APP1 "Exif" segment's first directory, as Pillow's getexif reads it for exif_transpose."""
    head = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 0, EXIF_SEARCH_BYTES), tf.uint8),
                   tf.int32)
    size = tf.size(head)

    def number(at, length, little=False):
        """The unsigned integer of `length` bytes at `at` (any shape), big- or little-endian."""
        places = tf.range(length)
        shifts = 8 * (places if little else length - 1 - places)
        read = tf.gather(head, tf.clip_by_value(at[..., None] + places, 0, size - 1))
        return tf.reduce_sum(tf.bitwise.left_shift(read, shifts), axis=-1)

    def searching(at, found):  # segments until the image data (SOS) or a broken marker
        return (found < 0) & (at + 10 <= size) & tf.equal(number(at, 1), 0xFF) \
            & tf.not_equal(number(at + 1, 1), 0xDA)

    def next_segment(at, found):
        exif = tf.equal(number(at + 1, 1), 0xE1) & tf.reduce_all(
            tf.equal(number(at + 4 + tf.range(6), 1), tf.constant(list(b"Exif\0\0"))))
        return at + 2 + number(at + 2, 2), tf.where(exif, at + 10, found)

    _, tiff = tf.while_loop(searching, next_segment, (tf.constant(2), tf.constant(-1)))
    little = tf.equal(number(tiff, 1), ord("I"))  # "II": Intel's byte order; "MM": Motorola's

    def field(at, length):
        return tf.where(little, number(tiff + at, length, little=True), number(tiff + at, length))

    directory = field(tf.constant(4), 4)
    entries = directory + 2 + 12 * tf.range(tf.minimum(field(directory, 2), MAX_EXIF_ENTRIES))
    orientation = tf.boolean_mask(field(entries + 8, 2), tf.equal(field(entries, 2), 0x0112))
    value = tf.cond((tiff >= 0) & (tf.size(orientation) > 0), lambda: orientation[0],
                    lambda: tf.constant(1))
    return tf.where((value >= 1) & (value <= 8), value, 1)


def _upright(image, orientation):
    """The image turned as Pillow's exif_transpose turns it for each EXIF Orientation (1: as it
    is; 2 mirrored; 3 turned half round; 4 flipped; 5 transposed; 6 turned a quarter clockwise;
    7 transversed; 8 a quarter counter-clockwise)."""
    return tf.switch_case(orientation - 1, [
        lambda: image, lambda: image[:, ::-1], lambda: image[::-1, ::-1], lambda: image[::-1],
        lambda: tf.transpose(image, (1, 0, 2)), lambda: tf.image.rot90(image, k=3),
        lambda: tf.transpose(image[::-1, ::-1], (1, 0, 2)), lambda: tf.image.rot90(image, k=1)])


def _decoded_png(data):
    """RGB uint8 [h, w, 3], transparency composited on white as Pillow's alpha_composite does."""
    rgba = tf.cast(tf.io.decode_png(data, channels=4, dtype=tf.uint8), tf.int32)
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    one = 1 << COMPOSITE_BITS
    blended = rgb * alpha * one + 255 * (255 - alpha) * one + (0x80 << COMPOSITE_BITS)
    blended = (((blended // 256) + blended) // 256) // one  # Pillow's shifts, as divisions
    return tf.cast(tf.where(alpha == 0, 255, blended), tf.uint8)


def _reduced(image, factor):
    """Each `factor` x `factor` box's mean (the last row and column of boxes partial) as Pillow's
    Image.reduce computes it (Reduce.c): (sum + count / 2) times a reciprocal of the count taken
    in float32 to 32 bits, shifted back by 24."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    rows, columns = -(-height // factor), -(-width // factor)
    padding = [[0, rows * factor - height], [0, columns * factor - width], [0, 0]]
    boxes = tf.reshape(tf.pad(tf.cast(image, tf.int64), padding),
                       (rows, factor, columns, factor, 3))
    counts = tf.reshape(tf.pad(tf.ones_like(image[..., :1], tf.int64), padding),
                        (rows, factor, columns, factor, 1))
    total, count = tf.reduce_sum(boxes, (1, 3)), tf.reduce_sum(counts, (1, 3))
    reciprocal = tf.cast(tf.constant(2.0 ** 32, tf.float32) / tf.cast(256 * count, tf.float32),
                         tf.int64)
    return tf.cast(((total + count // 2) * reciprocal) // 2 ** 24, tf.uint8)


def _resampled(image, size, axis):
    """uint8 image resized to `size` along `axis` by Pillow's bilinear filter, 8 bits out."""
    coefficients = _bilinear_coefficients(tf.shape(image)[axis], size)         # (size, in)
    pixels = tf.cast(image, tf.float64)  # integer sums below 2 ** 53: exact in any order
    summed = (tf.einsum("hwc,ow->hoc", pixels, coefficients) if axis == 1
              else tf.einsum("hwc,oh->owc", pixels, coefficients))
    shifted = tf.floor((summed + 2.0 ** (RESAMPLE_BITS - 1)) / 2.0 ** RESAMPLE_BITS)
    return tf.cast(tf.clip_by_value(shifted, 0, 255), tf.uint8)


def _bilinear_coefficients(in_size, out_size):
    """Pillow's fixed-point bilinear coefficients [out_size, in_size] (precompute_coeffs and
    normalize_coeffs_8bpc of Resample.c, in the same double arithmetic): each output pixel's
    window of input pixels, weighted by the triangle filter widened by the scale."""
    scale = tf.cast(in_size, tf.float64) / out_size
    filter_scale = tf.maximum(scale, 1.0)
    support = filter_scale  # bilinear's support, 1, times the filter's scale
    center = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale               # (out,)
    low = tf.maximum(tf.cast(center - support + 0.5, tf.int32), 0)              # C's (int)
    high = tf.minimum(tf.cast(center + support + 0.5, tf.int32), in_size)
    # The window's weights in order (at most 2 * ceil(support) + 1), summed one after the other
    # as the C loop sums them: float addition depends on its order.
    width = tf.cast(tf.math.ceil(support), tf.int32) * 2 + 1
    x = low[:, None] + tf.range(width)[None]                                     # (out, width)
    distance = (tf.cast(x, tf.float64) - center[:, None] + 0.5) * (1.0 / filter_scale)
    weights = tf.where(x < high[:, None], tf.maximum(1.0 - tf.abs(distance), 0.0), 0.0)
    total = tf.foldl(lambda total, column: total + column, tf.transpose(weights),
                     initializer=tf.zeros_like(center))
    normalised = tf.math.divide_no_nan(weights, total[:, None])
    fixed = tf.floor(0.5 + normalised * 2.0 ** RESAMPLE_BITS)                    # (out, width)
    return tf.reduce_sum(tf.one_hot(x, in_size, dtype=tf.float64) * fixed[..., None], axis=1)
