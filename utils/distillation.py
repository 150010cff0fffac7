"""Stage 4 with teachers: one model taught by an ensemble of finished runs (distillation).

An ensemble writes better captions than any of its members, at a fraction of one model's speed.
A student is an ordinary run that learns from the ensemble as well as from the references, at
two levels (Kim and Rush 2016, "Sequence-Level Knowledge Distillation"):

    word level      at each word of each reference caption, the student's next-word distribution
                    is pulled towards the teachers' averaged one (Hinton et al. 2015):
                    `utils.DistillationLoss`, `TrainingConfig.distillation_weight`
    sequence level  the teachers' own captions of the training photos (their ensemble's
                    DEFAULT_DECODING) join the references, one more caption a photo:
                    `TrainingConfig.teacher_captions`

What the teachers say at each word is computed once, before training, and read from disk as
training goes, not computed at every step: the student reads the same reference prefixes each
epoch and the teachers are frozen, so it never changes, and computing it on the fly would run
every teacher's forward pass in every step of every epoch. Whole, it would not fit on disk
(Flickr8k: 30,000 captions x 37 positions x 2,532 words, 5.6 GB in float16), so each position
keeps the teachers' `distillation_top_k` likeliest words and their probabilities, renormalised
over those words (`teacher_targets`).

Teachers must speak the student's vocabulary and have read the student's very features (the
same FeatureSource, grid positions alike): they are checked by name (`load_teachers`). The
student's record keeps each teacher's weights digest, not where the teacher lay.
"""
from pathlib import Path

import numpy as np
import tensorflow as tf

from .decoding import DEFAULT_DECODING, decode
from .download import file_sha256, progress_bar
from .files import atomic_path, read_json, write_json
from .pipeline import CaptionData
from .record import RunConfigError
from .runs import load_decoder, read_run, run_folders
from .training import WEIGHTS_FILE

__all__ = ["TEACHER_CAPTIONS_FILE", "TEACHER_TARGETS_FOLDER", "weights_digest", "load_teachers",
           "teacher_captions", "teacher_targets", "with_teacher_targets"]

TEACHER_CAPTIONS_FILE = "teacher_captions.json"  # in the student's folder: the sequence level's
TEACHER_TARGETS_FOLDER = "teachers"              # in the student's folder: the word level's tables
CAPTIONS_PER_PASS = 512  # captions the teachers read at once: bounds their [B, T, V] outputs
PHOTOS_PER_DECODE = 250  # training photos the teachers caption between two progress updates


def weights_digest(run_dir):
    """What a teacher is, as its student's record keeps it: the first 16 hex digits of the
    SHA-256 of its best weights."""
    return file_sha256(Path(run_dir) / WEIGHTS_FILE)[:16]


def load_teachers(run_dirs, vocab, features, image_shape, student_dir):
    """The finished runs `run_dirs` as one decoder (a CaptionDecoder, or their Ensemble), each
    checked against the student: its vocabulary (`vocab`), its features (`features`, a
    FeatureSource) and the shape of one image's features (`image_shape`: pooled, or a grid of so
    many positions). A teacher that does not fit, or that is the student's own folder, is refused
    by name."""
    run_dirs = run_folders(run_dirs)
    for run_dir in run_dirs:
        if run_dir.resolve() == Path(student_dir).resolve():
            raise RunConfigError(f"{run_dir} is the student's own run folder: a run cannot teach "
                                 "itself (set RUN_NAME to a new folder for the student)")
        teacher_vocab, config = read_run(run_dir)
        for what, theirs, mine in [
                ("vocabulary", teacher_vocab.fingerprint, vocab.fingerprint),
                ("features", config.features, features),
                ("feature shape", config.model.image_shape, tuple(image_shape))]:
            if theirs != mine:
                raise RunConfigError(f"{run_dir} cannot teach this run: not the same {what} "
                                     f"({theirs} against the student's {mine})")
    return load_decoder(run_dirs)[0]


def _members(teachers):
    """The teachers' Keras models: an Ensemble's members', or one run's."""
    return [d.model for d in getattr(teachers, "members", (teachers,))]


def teacher_captions(teachers, prepared, names, features, path):
    """{photo name: the teachers' caption} of the training photos that have features (rows of
    `features` named by `names`), written with DEFAULT_DECODING; kept in `path` (JSON) and read
    from there on a second visit. Add them with `prepared.with_captions`."""
    if Path(path).is_file():
        return read_json(path)
    row = {name: i for i, name in enumerate(names)}
    photos = [name for name in prepared.names("train") if name in row]
    captions = {}
    with progress_bar(total=len(photos), unit="photo", desc="teachers' captions") as progress:
        for first in range(0, len(photos), PHOTOS_PER_DECODE):
            chunk = photos[first:first + PHOTOS_PER_DECODE]
            written = decode(teachers, features[[row[n] for n in chunk]], DEFAULT_DECODING)
            captions |= {name: caption.text for name, caption in zip(chunk, written)}
            progress.update(len(chunk))
    write_json(path, captions)
    return captions


def teacher_targets(teachers, features, rows, tokens, temperature, top_k, out=None,
                    label="teachers' words"):
    """What the teachers say after each prefix of the encoded captions `tokens` [M, T] of the
    images `rows` [M]: (word ids [M, T - 1, k] int32, probabilities [M, T - 1, k] float16), the
    `top_k` likeliest words of their mean distribution flattened by `temperature` (p ** (1 / t),
    normalised), renormalised over those k; zeros after each caption's last word. `out`: the two
    arrays to fill (memory-mapped files: memory then follows CAPTIONS_PER_PASS, not M). `label`:
    its progress bar's."""
    members = _members(teachers)
    shape = (len(tokens), tokens.shape[1] - 1, top_k)
    ids, probs = out or (np.zeros(shape, "int32"), np.zeros(shape, "float16"))
    with progress_bar(total=len(tokens), unit="caption", desc=label) as progress:
        for first in range(0, len(tokens), CAPTIONS_PER_PASS):
            batch = np.asarray(tokens[first:first + CAPTIONS_PER_PASS])
            length = int((batch > 0).sum(1).max())
            image = tf.constant(np.asarray(features[np.asarray(rows[first:first + len(batch)])],
                                           "float32"))
            prefixes = tf.constant(batch[:, :length - 1])                        # (B, L)
            mean = tf.add_n([m((image, prefixes), training=False) for m in members]) / len(members)
            flattened = tf.nn.softmax(tf.math.log(tf.maximum(tf.cast(mean, tf.float32), 1e-12))
                                      / temperature)                             # (B, L, V)
            top, words = tf.math.top_k(flattened, top_k)                         # (B, L, k)
            real = (batch[:, 1:length] > 0)[..., None]                           # (B, L, 1)
            top = top / tf.reduce_sum(top, -1, keepdims=True)
            ids[first:first + len(batch), :length - 1] = np.where(real, words.numpy(), 0)
            probs[first:first + len(batch), :length - 1] = np.where(real, top.numpy(), 0)
            progress.update(len(batch))
    return ids, probs


def with_teacher_targets(data, teachers, folder, temperature, top_k):
    """`data` (CaptionData) with what the teachers say at each word of its train and val captions
    (`teacher_targets`), computed once into `folder` (`.npy` files, written atomically) and
    memory-mapped from there: a resumed run reads them back, training streams them."""
    taught = []
    for split, (rows, tokens) in (("train", data.train), ("val", data.val)):
        paths = [Path(folder) / f"{split}-{what}.npy" for what in ("ids", "probabilities")]
        if not all(p.is_file() for p in paths):  # an interrupted split is computed again
            shape = (len(tokens), tokens.shape[1] - 1, top_k)
            with atomic_path(paths[0]) as ids_file, atomic_path(paths[1]) as probs_file:
                out = (np.lib.format.open_memmap(ids_file, "w+", "int32", shape),
                       np.lib.format.open_memmap(probs_file, "w+", "float16", shape))
                teacher_targets(teachers, data.features, rows, tokens, temperature, top_k, out,
                                f"teachers' words, {split} captions")
                for array in out:
                    array.flush()
        taught.append(tuple(np.load(p, mmap_mode="r") for p in paths))
    return CaptionData(data.features, data.train, data.val, tuple(taught))
