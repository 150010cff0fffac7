"""Stage 2: image features from a pretrained CNN, extracted once and cached.

Each image becomes the global-average-pooled output of a Keras application and, for the
attention model, also that output before pooling: the last convolutional grid of positions
(`grid=True`; InceptionV3 at 299x299: 8x8 positions of 2,048 values). The cache is one `.npy` a
table (float16, memory-mappable: `features.npy`, `grid.npy`) with a JSON list of names, keyed by
encoder, weights and input size so that changing any of them never reuses stale features.
Extraction writes chunks as it goes: an interrupted run resumes from the last finished chunk.
"""
import contextlib
import fcntl
import hashlib
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps
from tqdm import tqdm  # text, not a widget: a widget renders blank in a saved notebook

from .download import PROGRESS_INTERVAL_S
from .files import atomic_path, portable_path, read_json, resolve_path, save_npy, write_json

__all__ = ["EncoderSpec", "ENCODERS", "encoder_spec", "weights_tag", "resolve_weights",
           "build_encoder", "preprocess", "MAX_IMAGE_PIXELS", "DECODE_SIZE", "ImageError",
           "decode_image", "load_image", "preview_image", "image_batches", "cache_dir",
           "find_feature_cache", "FeatureSource", "feature_source", "load_features", "grid_bytes",
           "FeatureRows", "finished_cache", "extract_features", "ExtractionSettings",
           "extraction_settings", "encoder_speed"]


# ---------------------------------------------------------------------------------------------
# Encoders: adding one is one entry in this table
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EncoderSpec:
    application: str   # the constructor's name in keras.applications
    module: str        # the keras.applications module holding its preprocess_input
    input_size: int


ENCODERS = {
    "inceptionv3": EncoderSpec("InceptionV3", "inception_v3", 299),
    "xception": EncoderSpec("Xception", "xception", 299),
    "resnet50": EncoderSpec("ResNet50", "resnet50", 224),
    "vgg16": EncoderSpec("VGG16", "vgg16", 224),
}
# Held while Keras makes layers: a seeded random encoder draws its initial weights from global
# random state, which a model made at the same time in another thread (the app serves several
# sessions) would draw from too, giving the encoder other weights than its run's features had.
KERAS_BUILDING = threading.Lock()


def encoder_spec(name):
    try:
        return ENCODERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}") from None


def weights_tag(weights):
    """Short, stable name of a weights choice, used in cache keys and run records."""
    if weights is None:
        return "random"
    if weights == "imagenet":
        return "imagenet"
    digest = hashlib.sha1(Path(weights).read_bytes()).hexdigest()[:10]
    return f"file-{digest}"


def resolve_weights(weights, dataset):
    """`"auto"`: random weights for the synthetic sample (offline, no download), ImageNet otherwise."""
    if weights != "auto":
        return weights
    return None if dataset == "sample" else "imagenet"


def build_encoder(name, weights="imagenet", input_size=None, seed=0, grid=False):
    """The CNN without its classifier, average-pooled to one vector per image; with `grid`, its
    last convolutional map instead, as positions in row-major order: [images, rows x columns, dim]
    (the pooled vector is their mean).

    `weights`: "imagenet" (downloaded once by Keras), a path to a no-top weights file, or None for
    random weights (seeded; for tests and the offline sample dataset only).
    """
    spec = encoder_spec(name)
    size = input_size or spec.input_size
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise FileNotFoundError(f"{weights}: no such weights file")
    constructor = getattr(keras.applications, spec.application)
    try:
        with KERAS_BUILDING:
            keras.utils.set_random_seed(seed)
            cnn = constructor(include_top=False, weights=weights, pooling=None if grid else "avg",
                              input_shape=(size, size, 3))
        if not grid:
            return cnn
        rows, columns, dim = cnn.output_shape[1:]
        positions = keras.layers.Reshape((rows * columns, dim), name="grid")(cnn.output)
        return keras.Model(cnn.input, positions, name=f"{cnn.name}_grid")
    except Exception as e:  # Keras raises a bare Exception when the download fails
        if weights != "imagenet":
            raise
        raise RuntimeError(
            f"could not download the ImageNet weights of {spec.application} ({e}). Without "
            f"internet, download the no-top weights file (keras.applications.{spec.application}, "
            f"'..._notop.h5') on another machine and set WEIGHTS in notebook 02 to its path") from None


def preprocess(name, images):
    """The encoder's own input scaling, applied to a batch of RGB images in [0, 255]."""
    module = getattr(keras.applications, encoder_spec(name).module)
    return module.preprocess_input(np.array(images, dtype="float32"))


# A GPU is fed larger batches, and computes in float16 where its tensor cores pay for it
# (features then equal float32's to about 1e-3); a CPU gains from neither.
GPU_BATCH_SIZE, CPU_BATCH_SIZE = 128, 32


@dataclass(frozen=True)
class ExtractionSettings:
    device: str              # what extracts: "GPU: <name>" or "CPU"
    batch_size: int
    mixed_precision: bool


def extraction_settings(batch_size=None, mixed_precision="auto"):
    """Notebook 02's settings for this machine: None and "auto" pick by whether it has a GPU.
    Sets Keras's float16 policy when mixed precision is on: call it before building the encoder."""
    gpus = tf.config.list_physical_devices("GPU")
    mixed = bool(gpus) if mixed_precision == "auto" else bool(mixed_precision)
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    return ExtractionSettings(f"GPU: {gpus[0].name}" if gpus else "CPU",
                              batch_size or (GPU_BATCH_SIZE if gpus else CPU_BATCH_SIZE), mixed)


def encoder_speed(model, encoder, batch_size):
    """Images a second through the CNN alone on this machine: one batch timed after a warm-up."""
    size = model.input_shape[1]
    batch = preprocess(encoder, np.random.default_rng(0).uniform(0, 255, (batch_size, size, size, 3)))
    model.predict_on_batch(batch)  # the first call traces the graph
    started = time.perf_counter()
    model.predict_on_batch(batch)
    return batch_size / (time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# Reading images: one function, used for the cached features and for captioning new photos
# ---------------------------------------------------------------------------------------------

MAX_IMAGE_PIXELS = 60_000_000  # far above any photo; refuses decompression bombs


class ImageError(ValueError):
    """An image that cannot be used; the message names the file."""


# JPEGs are decoded at the smallest of their built-in scales (1/2, 1/4, 1/8) that keeps both sides
# at least this long, other large images reduced to it right after decoding: above every encoder's
# input and the app's preview, so a large photo costs a fraction of its full decode and its
# copies, and every consumer reads it the same way.
DECODE_SIZE = 512
# Images over this many pixels (after that reduction) are decoded one at a time, however many
# cores tf.data decodes on: a 60-megapixel PNG takes about 1 GB while it decodes.
LARGE_IMAGE_PIXELS = 16_000_000
_ONE_LARGE_DECODE = threading.Lock()


def decode_image(path):
    """An image file as an 8-bit RGB Pillow image: any format Pillow reads (JPEG incl. CMYK and
    progressive, PNG with alpha, grayscale, 16-bit and float, WebP, BMP), EXIF orientation applied,
    transparency composited on white. `path` can also be an open binary file; errors then name it
    by its `name` attribute. Raises ImageError for anything unusable."""
    label = getattr(path, "name", "<file>") if hasattr(path, "read") else path
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ImageError(f"{label}: {image.width}x{image.height} pixels is more than the "
                                 f"{MAX_IMAGE_PIXELS:,} allowed (a decompression bomb?)")
            if image.format == "JPEG":
                image.draft("RGB", (DECODE_SIZE, DECODE_SIZE))
            large = image.width * image.height > LARGE_IMAGE_PIXELS
            with _ONE_LARGE_DECODE if large else contextlib.nullcontext():
                factor = max(min(image.size) // DECODE_SIZE, 1)
                if image.mode.startswith(("I", "F")):  # reduced as it is scaled, in strips
                    image = _to_8_bits(ImageOps.exif_transpose(image), label, factor)
                else:
                    if factor >= 2 and image.mode in ("RGB", "RGBA", "L", "CMYK"):
                        image = image.reduce(factor)  # as JPEG's draft does: before any copy
                    image = ImageOps.exif_transpose(image)
                if image.mode in ("RGBA", "LA", "P", "PA"):
                    image = image.convert("RGBA")
                    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(background, image)
                return image.convert("RGB")
    except ImageError:
        raise
    except Exception as e:  # Pillow raises many types for bad files; all mean "unusable"
        raise ImageError(f"{label}: cannot read as an image ({type(e).__name__}: {e})") from None


def load_image(image, size):
    """An image as a `size` x `size` RGB float32 array in [0, 255]: the one function that reads
    images for the feature cache and for new photos alike. `image`: a path, an open binary file,
    or what `decode_image` returned (to decode once for several sizes)."""
    if not isinstance(image, Image.Image):
        image = decode_image(image)
    return np.asarray(image.resize((size, size), Image.BILINEAR), dtype="float32")


# Rows of a 16-bit, 32-bit or float image scaled to 8 bits at a time: the image is never copied
# whole in wider pixels (a 60-megapixel 16-bit PNG once took 1.2 GB as float64).
STRIP_PIXELS = 1 << 20


def _strips(image, factor):
    """(top, its rows of `image` as float32) a strip at a time, each a multiple of `factor` rows
    (so that reducing strip by strip equals reducing the whole)."""
    rows = max(STRIP_PIXELS // image.width // factor, 1) * factor
    for top in range(0, image.height, rows):
        yield top, np.asarray(image.crop((0, top, image.width, min(top + rows, image.height))),
                              dtype="float32")


def preview_image(image, longest=256):
    """An image as a person sees it, for figures and the app: 8-bit RGB [H, W, 3] with its own
    shape, its longer side at most `longest` pixels (`load_image` squeezes it into the encoder's
    square). `image`: what `load_image` takes."""
    if not isinstance(image, Image.Image):
        image = decode_image(image)
    scale = min(longest / max(image.size), 1)
    size = (max(round(image.width * scale), 1), max(round(image.height * scale), 1))
    return np.asarray(image.resize(size, Image.BILINEAR) if scale < 1 else image)


def _to_8_bits(image, label, factor=1):
    """A 16-bit, 32-bit integer or float grey image as 8 bits, reduced by `factor`. Pillow's own
    conversion clips (a 16-bit photo turns white); here the values are scaled from their evident
    range. Pixels that are not numbers (NaN, infinite) are drawn black, with a warning."""
    low, high, not_numbers = np.inf, -np.inf, 0
    for _, strip in _strips(image, factor):
        finite = np.isfinite(strip)
        not_numbers += strip.size - int(finite.sum())
        if finite.any():
            low, high = min(low, strip[finite].min()), max(high, strip[finite].max())
    if not np.isfinite(high):
        raise ImageError(f"{label}: no pixel is a number (NaN or infinite throughout)")
    if not_numbers:
        warnings.warn(f"{label}: {not_numbers:,} pixels are not numbers (NaN or infinite), drawn "
                      "black", stacklevel=4)
    if image.mode.startswith("I;16") or (image.mode == "I" and 255 < high <= 65535):
        scale = 1 / 257  # 65535 -> 255
    elif image.mode == "F" and low >= 0 and high <= 1:
        scale = 255.0
    elif low < 0 or high > 255:
        raise ImageError(f"{label}: {image.mode} pixels from {low:g} to {high:g}, outside the "
                         "ranges this project knows (0-1, 0-255, 0-65535)")
    else:
        scale = 1.0
    reduced = Image.new("L", (-(-image.width // factor), -(-image.height // factor)))
    for top, strip in _strips(image, factor):
        pixels = np.nan_to_num(np.round(strip * scale), nan=0, posinf=0, neginf=0)
        piece = Image.fromarray(pixels.astype("uint8"), "L")
        reduced.paste(piece.reduce(factor) if factor > 1 else piece, (0, top // factor))
    return reduced


def image_batches(paths, size, batch_size, errors):
    """Batches of decoded images, read in parallel by tf.data; unreadable files flagged, not fatal.

    Yields (images [b, size, size, 3], ok [b] bool); `errors` receives {index in paths: why}.
    """
    def read(index):
        index = int(index)
        try:
            return load_image(paths[index], size), True
        except ImageError as e:
            errors[index] = str(e)
            return np.zeros((size, size, 3), "float32"), False

    def read_tf(index):
        image, ok = tf.numpy_function(read, [index], (tf.float32, tf.bool))
        return tf.ensure_shape(image, (size, size, 3)), tf.ensure_shape(ok, ())

    dataset = (tf.data.Dataset.range(len(paths))
               .map(read_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    yield from dataset.as_numpy_iterator()


# ---------------------------------------------------------------------------------------------
# The feature cache
# ---------------------------------------------------------------------------------------------

def cache_dir(features_root, encoder, weights, input_size=None):
    """Features of one (encoder, weights, input size) live in their own folder."""
    size = input_size or encoder_spec(encoder).input_size
    return Path(features_root) / f"{encoder.lower()}-{weights_tag(weights)}-{size}"


def find_feature_cache(features_root, encoder):
    """The one finished cache of `encoder` under `features_root` (notebook 02 writes it)."""
    found = sorted(p.parent for p in Path(features_root).glob(f"{encoder.lower()}-*/meta.json"))
    if len(found) != 1:
        what = f"{len(found)} ({', '.join(p.name for p in found)})" if found else "none"
        raise FileNotFoundError(
            f"{features_root}: {what} finished feature caches of {encoder}; "
            + ("run notebooks/02_extract_features.ipynb first" if not found
               else "set FEATURES to the one to use"))
    return found[0]


@dataclass(frozen=True)
class FeatureSource:
    """Where a run's features came from, as its record keeps it: enough to encode a new photo
    exactly like the training ones, or to say why that cannot be done."""
    kind: str                 # "cache": notebook 02's; "external": an .npz made elsewhere
    path: str                 # the cache folder or the .npz, relative to the repository if inside
    dim: int                  # feature size
    encoder: str = None       # the rest only for a cache: ENCODERS key...
    weights: str = None       # ...`weights_tag` of its weights...
    input_size: int = None    # ...and the square input size it read images at


def feature_source(path):
    """The `FeatureSource` of a finished cache (from its meta.json) or of an external `.npz`."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as data:
            dim = int(data["features"].shape[-1])  # of a vector, or of each position of a grid
        return FeatureSource("external", portable_path(path), dim)
    meta = read_json(path / "meta.json") if (path / "meta.json").is_file() else None
    if meta is None:
        raise FileNotFoundError(f"{path}: no finished feature cache "
                                "(run notebooks/02_extract_features.ipynb first)")
    return FeatureSource("cache", portable_path(path), int(meta["dim"]), meta["encoder"],
                         meta["weights"], int(meta["input_size"]))


def load_features(directory, grid=False):
    """(names, features) of a finished cache, or of an external `.npz` with `names` and `features`:
    vectors [images, dim], or with `grid` the grids of positions [images, positions, dim] (a cache
    extracted with `grid=True`, an `.npz` whose features are 3-D).

    A cache's features are memory-mapped, not read into RAM.
    """
    directory = resolve_path(directory)
    if directory.suffix == ".npz":
        with np.load(directory) as data:
            names, features = [str(n) for n in data["names"]], data["features"]
        if len(names) != len(features):
            raise ValueError(f"{directory}: {len(names)} names but {len(features)} feature rows")
        if features.ndim != (3 if grid else 2):
            raise ValueError(f"{directory}: its features are {features.shape}; "
                             + ("the attention model reads grids [images, positions, dim]" if grid
                                else "grids: only the attention model reads them"))
        return names, features
    if not (directory / "meta.json").is_file():
        raise FileNotFoundError(f"{directory}: no finished feature cache "
                                "(run notebooks/02_extract_features.ipynb first)")
    names = read_json(directory / "names.json")
    if grid and not (directory / "grid.npy").is_file():
        raise FileNotFoundError(f"{directory}: no grids of positions in this cache (run "
                                "notebooks/02_extract_features.ipynb with GRID = True)")
    return names, np.load(directory / ("grid.npy" if grid else "features.npy"), mmap_mode="r")


def grid_bytes(encoder_model, images, dtype="float16"):
    """(positions, dim, bytes on disk) of the grids of `images` images from a grid encoder."""
    positions, dim = encoder_model.output_shape[1:]
    return positions, dim, images * positions * dim * np.dtype(dtype).itemsize


class FeatureRows:
    """The feature vectors of some rows of a table, read only when sliced: a split of a
    memory-mapped cache is decoded batch by batch, never copied whole.

    `rows[a:b]` gives those vectors as float32; indexing with an array of positions gives the
    rows reordered (a shuffled control), still unread."""

    def __init__(self, table, rows):
        self.table, self.rows = table, np.asarray(rows, "int64")

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return np.asarray(self.table[self.rows[index]], "float32")
        return FeatureRows(self.table, self.rows[index])


def extract_features(images_dir, names, directory, encoder="inceptionv3", weights="imagenet",
                     input_size=None, batch_size=32, chunk_size=256, dtype="float16",
                     model=None, shard=None, grid=False):
    """Extract and cache features of the images `names` (relative to `images_dir`) in `directory`.

    Resumes an interrupted run from its finished chunks (of `chunk_size` images); returns the
    cache's meta record. Unreadable images are skipped, warned about and listed in `skipped.json`.
    A finished cache re-reads the images whose size or modification time changed since (and
    their grids, if it has them). `model` lets a caller pass an already built encoder (with
    `grid`, one of `build_encoder(..., grid=True)`).

    `grid`: also keep each image's grid of positions (`grid.npy`, [images, positions, dim]); the
    pooled vectors are then their means. A finished cache without grids is extracted again.

    `shard` = (i, n) extracts only the i-th of n shares of the chunks (chunk k when k % n == i),
    so that n GPUs or machines fill one cache together, each resuming its own chunks; it returns
    None while other shards' chunks are missing. A final call without `shard` joins the chunks
    (extracting any still missing), checking that every image is there once.
    """
    if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard {shard!r}: give (i, n), the i-th of n shards, 0 <= i < n")
    with _one_writer(Path(directory), shard):
        return _extract(images_dir, list(names), Path(directory), encoder, weights, input_size,
                        batch_size, chunk_size, dtype, model, shard, grid)


@contextlib.contextmanager
def _one_writer(directory, shard):
    """One extraction writes a cache at a time: a run without `shard` (the join too) holds the
    cache's lock alone; shards share it, each holding its own shard's lock. Another writer is
    refused at once, by name (two at once once crashed one and left a stale chunks/ folder).
    The kernel drops the locks when a process ends, however it ends."""
    directory.mkdir(parents=True, exist_ok=True)
    locks = [(directory / ".lock", "another extraction", fcntl.LOCK_SH if shard else fcntl.LOCK_EX)]
    if shard:
        locks.append((directory / f".lock-shard-{shard[0]}-of-{shard[1]}",
                      f"another extraction of shard {shard[0]} of {shard[1]}", fcntl.LOCK_EX))
    with contextlib.ExitStack() as held:
        for path, who, mode in locks:
            lock = held.enter_context(open(path, "a"))
            try:
                fcntl.flock(lock, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(f"{directory} is being written by {who} (or a join): let it "
                                   "finish, or stop it, then run again") from None
            except OSError:  # a file system without locks (some network drives): unguarded
                break
        yield


def _extract(images_dir, names, directory, encoder, weights, input_size, batch_size, chunk_size,
             dtype, model, shard, grid):
    paths = [str(Path(images_dir) / n) for n in names]
    size = input_size or encoder_spec(encoder).input_size
    stats = _image_stats(paths)  # before reading: a change while extracting is seen next time
    meta = finished_cache(directory, names, grid)
    if meta:
        changed = _changed_images(directory, stats)
        has_grids = bool(meta.get("positions"))  # then the changed images' grids too
        if changed and (model is None or len(model.output_shape) != 2 + has_grids):
            model = build_encoder(encoder, weights, size, grid=has_grids)
        if not changed or _reread(directory, names, paths, stats, changed, encoder, model, size,
                                  batch_size):
            return meta
    chunks = directory / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    starts = range(0, len(paths), chunk_size)
    mine = [s for s in starts if shard is None or (s // chunk_size) % shard[1] == shard[0]]
    todo = [s for s in mine if not _chunk_done(chunks, s, names[s:s + chunk_size], grid)]
    model = model or (build_encoder(encoder, weights, size, grid=grid) if todo else None)
    pending = sum(len(names[s:s + chunk_size]) for s in todo)
    started = time.time()
    with tqdm(total=len(names), initial=len(names) - pending, unit="img",
              mininterval=PROGRESS_INTERVAL_S,
              desc=f"{encoder} features") as bar:
        for start in todo:
            requested = names[start:start + chunk_size]
            feats, errors = _extract_chunk(model, encoder, paths[start:start + chunk_size], size,
                                           batch_size, bar)
            kept = [n for i, n in enumerate(requested) if i not in errors]
            skipped = {requested[i]: message for i, message in errors.items()}
            if grid:  # feats are grids (b, positions, dim); the pooled vectors their means
                save_npy(chunks / f"{start:08d}-grid.npy", feats.astype(dtype))
                feats = feats.mean(axis=1)
            save_npy(chunks / f"{start:08d}.npy", feats.astype(dtype))
            write_json(chunks / f"{start:08d}.json",
                       {"requested": requested, "names": kept, "skipped": skipped, "grid": grid})
    elapsed = time.time() - started
    if shard is not None:
        waiting = [s for s in starts
                   if not _chunk_done(chunks, s, names[s:s + chunk_size], grid)]
        print(f"shard {shard[0]} of {shard[1]} (0-based): its {len(mine)} chunk(s) done; "
              + (f"{len(waiting)} chunk(s) of other shards to go, then join (SHARD = None)"
                 if waiting else "every shard is done: join them (SHARD = None)"))
        return None
    return _finish_cache(directory, chunks, starts, names, stats, {
        "encoder": encoder.lower(), "weights": weights_tag(weights), "input_size": size,
        "dtype": dtype, "seconds": round(elapsed, 2),
        "images_per_second": round(pending / elapsed, 2) if pending else None}, grid)


def finished_cache(directory, names, grid=False):
    """The meta record of the finished cache in `directory` if it holds the images `names`, with
    their grids when `grid` asks for them; else None (it must be extracted, or extracted on)."""
    path = Path(directory) / "meta.json"
    meta = read_json(path) if path.is_file() else None
    return meta if meta and _serves(meta, list(names), bool(meta.get("positions")), grid) else None


def _chunk_done(chunks, start, requested, grid):
    path = chunks / f"{start:08d}.json"
    if not path.is_file():
        return False
    record = read_json(path)
    return _serves(record, requested, record.get("grid", False), grid)


def _serves(record, requested, has_grids, grid):
    """A finished cache or chunk serves a request: the same images, and grids unless none are
    asked for (a cache with grids serves a request without)."""
    return record["requested"] == requested and (has_grids or not grid)


def _extract_chunk(model, encoder, paths, size, batch_size, bar):
    """Features of the readable images among `paths`, and {index: why} for the others."""
    features, errors = [], {}
    for images, ok in image_batches(paths, size, batch_size, errors):
        if ok.any():
            features.append(np.asarray(model.predict_on_batch(preprocess(encoder, images[ok]))))
        bar.update(len(ok))
    for message in errors.values():
        warnings.warn(f"skipped {message}", stacklevel=3)
    if not features:
        return np.zeros((0, *model.output_shape[1:]), "float32"), errors
    return np.concatenate(features), errors


def _image_stats(paths):
    """(size, modification time) of each image file, to tell a changed image from a cached one."""
    stats = []
    for path in paths:
        try:
            info = os.stat(path)
            stats.append([info.st_size, info.st_mtime_ns])
        except OSError:
            stats.append(None)
    return stats


def _changed_images(directory, stats):
    """Indices of the images whose `stats` differ from those the cache read (none for a cache
    made before it kept its images' stats)."""
    if not (directory / "stats.json").is_file():
        return []
    return [i for i, (old, new) in enumerate(zip(read_json(directory / "stats.json"), stats))
            if old != new]


def _reread(directory, names, paths, stats, changed, encoder, model, size, batch_size):
    """Replace the rows of changed images in a finished cache (with a grid `model`, their grids
    too); False (the cache then removed, to be made anew) when one of them was skipped before or
    cannot be read now."""
    row = {n: i for i, n in enumerate(read_json(directory / "names.json"))}
    names = [names[i] for i in changed]
    if all(n in row for n in names):
        with tqdm(total=len(changed), unit="img", desc="changed images",
                  mininterval=PROGRESS_INTERVAL_S) as bar:
            fresh, errors = _extract_chunk(model, encoder, [paths[i] for i in changed], size,
                                           batch_size, bar)
        if not errors:
            rows = [row[n] for n in names]
            if fresh.ndim == 3:  # grids: their rows rewritten in place, not the whole file
                # (interrupted before stats.json below, these images are simply read again)
                grids = np.load(directory / "grid.npy", mmap_mode="r+")
                grids[rows] = fresh.astype(grids.dtype)
                grids.flush()
                del grids
                fresh = fresh.mean(axis=1)
            features = np.load(directory / "features.npy")
            features[rows] = fresh.astype(features.dtype)
            save_npy(directory / "features.npy", features)
            write_json(directory / "stats.json", stats)
            print(f"re-read {len(changed)} changed image(s), first {names[0]}")
            return True
    (directory / "meta.json").unlink()
    return False


def _finish_cache(directory, chunks, starts, requested, stats, meta, grid=False):
    """Join the chunks into the final files; meta.json, written last, marks the cache finished.
    Grids are copied chunk by chunk into the mapped file: never all in memory."""
    arrays, names, skipped = [], [], {}
    for start in starts:
        record = read_json(chunks / f"{start:08d}.json")
        arrays.append(np.load(chunks / f"{start:08d}.npy"))
        names += record["names"]
        skipped.update(record["skipped"])
    features = np.concatenate(arrays)
    _check_every_image_once(directory, requested, names, skipped, len(features))
    save_npy(directory / "features.npy", features)
    if grid:
        pieces = [np.load(chunks / f"{start:08d}-grid.npy", mmap_mode="r") for start in starts]
        with atomic_path(directory / "grid.npy") as tmp:
            table = np.lib.format.open_memmap(tmp, "w+", pieces[0].dtype,
                                              (len(names), *pieces[0].shape[1:]))
            for row, piece in zip(np.cumsum([0] + [len(p) for p in pieces]), pieces):
                table[row:row + len(piece)] = piece
            table.flush()
            del table
        meta["positions"] = int(pieces[0].shape[1])
    write_json(directory / "names.json", names)
    write_json(directory / "skipped.json", skipped)
    write_json(directory / "stats.json", stats)
    meta = {**meta, "count": len(names), "dim": int(features.shape[1]), "skipped": len(skipped),
            "requested": requested}
    write_json(directory / "meta.json", meta)
    for path in chunks.iterdir():
        path.unlink()
    chunks.rmdir()
    return meta


def _check_every_image_once(directory, requested, names, skipped, rows):
    """Before chunks (perhaps from several shards) become one cache: each requested image is
    there exactly once, with features or skipped, and each has its row."""
    found = names + list(skipped)
    if sorted(found) != sorted(requested) or len(names) != rows:
        extra = sorted(set(found) - set(requested))
        twice = sorted({n for n in found if found.count(n) > 1})
        missing = sorted(set(requested) - set(found))
        raise RuntimeError(f"{directory}/chunks do not hold every image once (missing "
                           f"{missing[:3]}, twice {twice[:3]}, not asked for {extra[:3]}, "
                           f"{rows} rows for {len(names)} names): delete {directory}/chunks "
                           "and extract again")
