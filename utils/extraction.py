"""Stage 2: image features from a pretrained CNN, extracted once into the cache (`utils.features`).

Each image becomes the global-average-pooled output of an `Encoder` and, for the attention model,
also that output before pooling: the last convolutional grid of positions (`grid=True`;
InceptionV3 at 299x299: 8x8 positions of 2,048 values). Extraction writes chunks as it goes: an
interrupted run resumes from the last finished chunk, and several machines can fill one cache.
"""
import contextlib
import dataclasses
import fcntl
import os
import time
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from .download import progress_bar
from .encoders import weights_tag
from .features import CacheRecord, finished_cache
from .files import atomic_path, read_json, save_npy, write_json
from .images import ImageError, load_image

__all__ = ["image_batches", "grid_bytes", "extract_features"]


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


def grid_bytes(encoder_model, images, dtype="float16"):
    """(positions, dim, bytes on disk) of the grids of `images` images from a grid encoder."""
    positions, dim = encoder_model.output_shape[1:]
    return positions, dim, images * positions * dim * np.dtype(dtype).itemsize


def extract_features(images_dir, names, directory, encoder, batch_size=32, chunk_size=256,
                     dtype="float16", model=None, shard=None, grid=False):
    """Extract and cache features of the images `names` (relative to `images_dir`) in `directory`,
    made by `encoder` (an Encoder).

    Resumes an interrupted run from its finished chunks (of `chunk_size` images); returns the
    cache's CacheRecord. Unreadable images are skipped, warned about and listed in `skipped.json`.
    A finished cache re-reads the images whose size or modification time changed since (and
    their grids, if it has them). `model` lets a caller pass an already built encoder (with
    `grid`, one of `encoder.build(grid=True)`).

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
        return _extract(images_dir, list(names), Path(directory), encoder, batch_size,
                        chunk_size, dtype, model, shard, grid)


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


def _extract(images_dir, names, directory, encoder, batch_size, chunk_size, dtype, model, shard,
             grid):
    paths = [str(Path(images_dir) / n) for n in names]
    stats = _image_stats(paths)  # before reading: a change while extracting is seen next time
    meta = finished_cache(directory, names, grid)
    if meta:
        changed = _changed_images(directory, stats)
        has_grids = bool(meta.positions)  # then the changed images' grids too
        if changed and (model is None or len(model.output_shape) != 2 + has_grids):
            model = encoder.build(grid=has_grids)
        if not changed or _reread(directory, names, paths, stats, changed, encoder, model,
                                  batch_size):
            return meta
    chunks = directory / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    starts = range(0, len(paths), chunk_size)
    mine = [s for s in starts if shard is None or (s // chunk_size) % shard[1] == shard[0]]
    todo = [s for s in mine if not _chunk_done(chunks, s, names[s:s + chunk_size], grid)]
    model = model or (encoder.build(grid=grid) if todo else None)
    pending = sum(len(names[s:s + chunk_size]) for s in todo)
    started = time.time()
    with progress_bar(total=len(names), initial=len(names) - pending, unit="img",
                      desc=f"{encoder.name} features") as bar:
        for start in todo:
            requested = names[start:start + chunk_size]
            feats, errors = _extract_chunk(model, encoder, paths[start:start + chunk_size],
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
        "encoder": encoder.name, "weights": weights_tag(encoder.weights),
        "input_size": encoder.input_size,
        "dtype": dtype, "seconds": round(elapsed, 2),
        "images_per_second": round(pending / elapsed, 2) if pending else None}, grid)


def _chunk_done(chunks, start, requested, grid):
    path = chunks / f"{start:08d}.json"
    if not path.is_file():
        return False
    record = read_json(path)
    # As a finished cache: the same images, and grids unless none are asked for.
    return record["requested"] == requested and (record.get("grid", False) or not grid)


def _extract_chunk(model, encoder, paths, batch_size, bar):
    """Features of the readable images among `paths`, and {index: why} for the others."""
    features, errors = [], {}
    for images, ok in image_batches(paths, encoder.input_size, batch_size, errors):
        if ok.any():
            batch = encoder.spec.preprocess(images[ok])
            features.append(np.asarray(model.predict_on_batch(batch)))
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


def _reread(directory, names, paths, stats, changed, encoder, model, batch_size):
    """Replace the rows of changed images in a finished cache (with a grid `model`, their grids
    too); False (the cache then removed, to be made anew) when one of them was skipped before or
    cannot be read now."""
    row = {n: i for i, n in enumerate(read_json(directory / "names.json"))}
    names = [names[i] for i in changed]
    if all(n in row for n in names):
        with progress_bar(total=len(changed), unit="img", desc="changed images") as bar:
            fresh, errors = _extract_chunk(model, encoder, [paths[i] for i in changed],
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


def _finish_cache(directory, chunks, starts, requested, stats, made_by, grid=False):
    """Join the chunks into the final files; meta.json, written last, marks the cache finished.
    Grids are copied chunk by chunk into the mapped file: never all in memory. `made_by`: the
    CacheRecord's fields of the encoder and the extraction."""
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
        made_by["positions"] = int(pieces[0].shape[1])
    write_json(directory / "names.json", names)
    write_json(directory / "skipped.json", skipped)
    write_json(directory / "stats.json", stats)
    meta = CacheRecord(**made_by, count=len(names), dim=int(features.shape[1]),
                       skipped=len(skipped), requested=requested)
    write_json(directory / "meta.json", dataclasses.asdict(meta))
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
