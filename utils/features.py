"""Stage 2: the feature cache, and features made elsewhere, as the later stages read them.

A cache (notebook 02, `utils.extraction`) is one `.npy` a table (float16, memory-mappable:
`features.npy`, and for the attention model `grid.npy`) with a JSON list of names, in a folder
named after its `Encoder` (network, weights, input size), so that changing any of them never
reuses stale features; its `meta.json`, written last, is a `CacheRecord`. Features made elsewhere
come as an `.npz` of `names` and `features`. A run records which it read in its `FeatureSource`.
"""
import hashlib
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import atomic_path, portable_path, read_json, resolve_path
from .record import FeatureKind, FeatureSource

__all__ = ["cache_dir", "find_feature_cache", "CacheRecord", "feature_source",
           "features_fingerprint", "has_grids", "load_features", "load_feature_tables",
           "SideBySide", "save_side_by_side", "FeatureRows", "finished_cache"]


def cache_dir(features_root, encoder):
    """Features of one Encoder (network, weights, input size) live in their own folder."""
    return Path(features_root) / encoder.tag


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
class CacheRecord:
    """A finished feature cache's meta.json: what made it and what it holds. Written last, it
    marks the cache finished."""
    encoder: str                    # ENCODERS key
    weights: str                    # `weights_tag` of the encoder's weights
    input_size: int                 # the square side the images were read at
    dtype: str                      # of the stored features
    seconds: float                  # extraction time of the run that finished it
    images_per_second: float        # of that run; None when it extracted nothing
    count: int                      # images with features, one row each (names.json)
    dim: int                        # feature size
    skipped: int                    # unreadable images, listed in skipped.json
    requested: list                 # the image names asked for, in order
    positions: int = None           # grid positions an image, when the cache kept grids

    @classmethod
    def read(cls, directory):
        """The record of the cache in `directory`; None while it is unfinished."""
        path = Path(directory) / "meta.json"
        return cls(**read_json(path)) if path.is_file() else None


def feature_source(path, encoder=None):
    """The `FeatureSource` of a finished cache (from its meta.json) or of an external `.npz`.
    `encoder`: the ENCODERS network, with its ImageNet weights at its own input size, that made
    an `.npz`'s features from photos squashed whole to that size (as `utils.load_image` reads
    them), when its maker says so: a run on them can then encode a new photo the same way.
    Several networks' pooled features side by side name each ("efficientnet_lite0+
    efficientnet_lite2", utils.SIDE_BY_SIDE): each reads a photo at its own size."""
    path = Path(path)
    if path.suffix == ".npz":
        shape = _npz_shape(path, "features")
        dim = shape[-1]  # of a vector, or of each position of a grid
        if encoder is None:
            return FeatureSource(FeatureKind.EXTERNAL, portable_path(path), dim,
                                 fingerprint=features_fingerprint(path))
        from .encoders import SIDE_BY_SIDE, encoder_spec, side_by_side  # TensorFlow: where named
        names = side_by_side(encoder)
        dims = [encoder_spec(name).dim for name in names]
        if len(names) > 1 and (len(shape) != 2 or sum(dims) != dim):
            raise ValueError(f"{path}: not {' and '.join(names)}'s pooled features side by side "
                             f"({' + '.join(map(str, dims))} values an image): its features "
                             f"are {list(shape[1:])} an image")
        size = encoder_spec(names[0]).input_size if len(names) == 1 else None  # each its own
        return FeatureSource(FeatureKind.EXTERNAL, portable_path(path), dim,
                             SIDE_BY_SIDE.join(names), "imagenet", size,
                             features_fingerprint(path))
    meta = CacheRecord.read(path)
    if meta is None:
        raise FileNotFoundError(f"{path}: no finished feature cache "
                                "(run notebooks/02_extract_features.ipynb first)")
    return FeatureSource(FeatureKind.CACHE, portable_path(path), meta.dim, meta.encoder,
                         meta.weights, meta.input_size, features_fingerprint(path))


def features_fingerprint(path):
    """A digest of a table's image names and pooled features, as stored: the same for a copy of
    the same features anywhere, another for any other content."""
    digest = hashlib.sha256()
    path = resolve_path(path)
    if path.suffix == ".npz":
        names, features = load_features(path, grid=len(_npz_shape(path, "features")) == 3)
        digest.update("\n".join(names).encode())
        digest.update(np.ascontiguousarray(features).tobytes())
    else:
        for name in ("names.json", "features.npy"):
            with open(path / name, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def has_grids(path):
    """Whether a cache (extracted with `grid=True`) or an `.npz` (3-D features) holds grids of
    positions, which a model that can read either (the transformer) then reads."""
    path = resolve_path(path)
    if path.suffix == ".npz":
        return len(_npz_shape(path, "features")) == 3
    return (path / "grid.npy").is_file()


def _npz_shape(path, name):
    """The shape of the array `name` of an .npz, from its header alone: a compressed table is
    not read whole to learn it."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        shape, _, _ = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                       else np.lib.format.read_array_header_2_0(f))
    return tuple(int(n) for n in shape)


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
        _check_rows(directory, names, features)
        if features.ndim != (3 if grid else 2):
            raise ValueError(f"{directory}: its features are {features.shape}; "
                             + ("the attention model reads grids [images, positions, dim]" if grid
                                else "grids: only the attention model and the transformer "
                                     "read them"))
        return names, features
    if not (directory / "meta.json").is_file():
        raise FileNotFoundError(f"{directory}: no finished feature cache "
                                "(run notebooks/02_extract_features.ipynb first)")
    names = read_json(directory / "names.json")
    if grid and not (directory / "grid.npy").is_file():
        raise FileNotFoundError(f"{directory}: no grids of positions in this cache (run "
                                "notebooks/02_extract_features.ipynb with GRID = True)")
    return names, np.load(directory / ("grid.npy" if grid else "features.npy"), mmap_mode="r")


def _check_rows(path, names, features):
    """Refuse a features file that would train or decode wrongly without a word: a name twice
    (one image's captions would be dropped, the other's read against its features) or a value
    that is not finite (one NaN makes every standardised feature NaN: a model blind to images)."""
    twice = [name for name, count in Counter(names).items() if count > 1]
    if twice:
        raise ValueError(f"{path}: {len(twice)} image names twice, e.g. {twice[0]!r}: each image "
                         "must have one row")
    finite = np.isfinite(features.reshape(len(features), -1)).all(axis=1)
    if not finite.all():
        bad = [names[i] for i in np.flatnonzero(~finite)]
        raise ValueError(f"{path}: features of {len(bad)} images are not finite (NaN or "
                         f"infinite), e.g. {bad[0]!r}: extract them again")


def load_feature_tables(paths, grid=False):
    """(names, features) of one features path (`load_features`), or of several of the same photos
    (an ensemble across encoders reads one each): the names that every one holds, in the first's
    order, and their features side by side (`SideBySide`, read only when indexed)."""
    if len(paths) == 1:
        return load_features(paths[0], grid)
    loaded = [load_features(path, grid) for path in paths]
    rows = [{name: i for i, name in enumerate(names)} for names, _ in loaded]
    names = [name for name in loaded[0][0] if all(name in row for row in rows)]
    return names, SideBySide([(table, np.array([row[n] for n in names], "int64"))
                              for (_, table), row in zip(loaded, rows)])


class SideBySide:
    """Several tables of features of the same images as one: indexed by an array of image
    positions, it reads those rows of each table and lays them side by side on the last axis."""

    def __init__(self, parts):
        self.parts = parts  # (table, each image's row in it), per table

    def __len__(self):
        return len(self.parts[0][1])

    def __getitem__(self, images):
        return np.concatenate([np.asarray(table[rows[images]], "float32")
                               for table, rows in self.parts], axis=-1)


def save_side_by_side(paths, out):
    """Several `.npz` tables of pooled features of the same photos, in one order, written as one
    `.npz` (atomically) with each photo's vectors side by side in `paths`' order: the features of
    a run on several networks (FEATURES_ENCODER "efficientnet_lite0+efficientnet_lite2"). A photo
    missing from any table is refused, named, never dropped. Returns `out`."""
    tables = [load_features(path) for path in paths]
    first = tables[0][0]
    for path, (names, _) in zip(paths[1:], tables[1:]):
        unmatched = sorted(set(names) ^ set(first))
        if unmatched:
            raise ValueError(f"{path} and {paths[0]} are not of the same photos: {len(unmatched)} "
                             f"in one only, e.g. {unmatched[0]!r}")
        if names != first:
            raise ValueError(f"{path} holds the photos of {paths[0]} in another order")
    features = np.concatenate([table for _, table in tables], axis=1)  # [images, sum of dims]
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, names=np.asarray(first), features=features)
    return Path(out)


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


def finished_cache(directory, names, grid=False):
    """The CacheRecord of the finished cache in `directory` if it holds the images `names`, with
    their grids when `grid` asks for them; else None (it must be extracted, or extracted on)."""
    meta = CacheRecord.read(directory)
    return meta if meta and meta.requested == list(names) and (meta.positions or not grid) else None
