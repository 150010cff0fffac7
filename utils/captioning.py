"""Captioning new photos with a run: the encoder that made its features, rebuilt, and its decoder.

A photo is read and scaled by the same `load_image` and `preprocess` as the feature cache, encoded
by the run's own network (its weights named in the record: ImageNet's, a seeded random network,
or a weights file given again), then decoded. Runs trained on features made elsewhere say why
they cannot encode a photo, and what to do instead.
"""
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .decoding import DEFAULT_DECODING, CaptionDecoder, Ensemble, decode
from .encoders import Encoder, encoder_spec, side_by_side, weights_tag
from .images import ImageError, decode_image, load_image
from .record import FeatureKind, RunConfig, RunConfigError
from .runs import feature_sources, load_decoder, run_folders

__all__ = ["RANDOM_ENCODER_NOTE", "NoEncoderError", "why_no_encoder", "encoder_of", "encoded_parts",
           "Captioner",
           "caption_image", "caption_photos", "caption_image_files"]

# Why a sample run's captions can name a wrong shape or colour while its BLEU-4 looks excellent.
RANDOM_ENCODER_NOTE = (
    "These features come from an encoder with random weights (the sample runs offline, without "
    "ImageNet's): they keep colours and layout better than shapes, so some captions name a wrong "
    "shape or colour; BLEU stays high because every caption of the sample has the same few "
    "sentence patterns, which the model gets right.")


class NoEncoderError(ValueError):
    """A run that cannot encode a new photo: its message says why, and what to do instead."""


def why_no_encoder(source):
    """Why features of this FeatureSource (a run record's) cannot be made again for a new photo,
    in one sentence with what to do instead; None when they can (notebook 02's cache, or features
    whose network was named)."""
    if source.kind != FeatureKind.EXTERNAL or source.encoder:
        return None
    return (f"This run was trained on features made outside this repository "
            f"({Path(source.path).name}), so it cannot encode a new photo the same way: "
            "it captions the images whose features you give it (FEATURES in notebook 05). To "
            "caption your own photos, train a run on features of notebook 02, or name the "
            "network that made these (FEATURES_ENCODER in notebook 04).")


def encoder_of(source, grid=False, weights_file=None):
    """The CNN that made features of this FeatureSource (with `grid`, its grids), so that a new
    photo is encoded exactly like the training ones. Random weights are rebuilt from their seed;
    a weights file must be given again."""
    why = why_no_encoder(source)
    if why:
        raise NoEncoderError(why)
    if source.weights.startswith("file-") and (
            weights_file is None or weights_tag(weights_file) != source.weights):
        raise ValueError(f"this run's encoder used a weights file ({source.weights}): pass its "
                         "path" + (f"; {weights_file} is another file" if weights_file else ""))
    weights = {"random": None, "imagenet": "imagenet"}.get(source.weights, weights_file)
    cnn = Encoder(source.encoder, weights, source.input_size).build(grid=grid)
    if cnn.output_shape[-1] != source.dim:  # a declared encoder (FEATURES_ENCODER) that did not
        raise RunConfigError(f"{source.encoder} makes {cnn.output_shape[-1]} values an image, "
                             f"but this run's features ({Path(source.path).name}) have "
                             f"{source.dim}: another network made them")
    return cnn


def encoded_parts(source):
    """The FeatureSources a new photo is encoded by, one per network: pooled features of several
    networks side by side (an encoder named "a+b", utils.SIDE_BY_SIDE) are each network's share
    of the vector, in order, each read at that network's own input size; any other source is
    itself alone."""
    names = side_by_side(source.encoder) if source.encoder else ()
    if len(names) < 2:
        return (source,)
    return tuple(dataclasses.replace(source, encoder=name, dim=encoder_spec(name).dim,
                                     input_size=encoder_spec(name).input_size) for name in names)


def _photo_sources(decoder, config):
    """What a photo is encoded by for a decoder's input, in order: each table's source
    (feature_sources), split into its networks (encoded_parts)."""
    return tuple(part for source in feature_sources(decoder, config)
                 for part in encoded_parts(source))


@dataclass
class Captioner:
    """A run (or an Ensemble of runs) ready to caption new photos: its decoder, and the encoders
    of its input (one per table; an ensemble across encoders has one table per encoder, a run on
    several networks' features side by side one encoder per network)."""
    decoder: CaptionDecoder | Ensemble
    encoders: tuple  # keras.Model, one per `sources`
    config: RunConfig

    @classmethod
    def from_run(cls, run_or_runs, weights_file=None):
        """A run folder's captioner; a list of folders: their ensemble's (utils.load_decoder)."""
        decoder, _, config = load_decoder(run_folders(run_or_runs))
        return cls.of(decoder, config, weights_file)

    @classmethod
    def of(cls, decoder, config, weights_file=None):
        """The captioner of a decoder loaded with its first run's `config`; NoEncoderError for
        features made elsewhere by a network nobody named."""
        return cls(decoder, tuple(encoder_of(source, config.model.reads_grid, weights_file)
                                  for source in _photo_sources(decoder, config)), config)

    @property
    def sources(self):
        """What each encoder makes of a photo (one FeatureSource each, in the input's order)."""
        return _photo_sources(self.decoder, self.config)

    def read(self, image):
        """An image (a path, an open file or a decoded image) as each encoder reads it: one
        `load_image` at each encoder's input size. Raises ImageError, naming the image."""
        decoded = image if isinstance(image, Image.Image) else decode_image(image)  # once
        return tuple(load_image(decoded, source.input_size) for source in self.sources)

    def features(self, photos):
        """The features of photos as `read` gives them: [n, the encoders' widths summed]."""
        tables = [encoder.predict(encoder_spec(source.encoder).preprocess(
                      np.stack([photo[t] for photo in photos])), verbose=0)
                  for t, (source, encoder) in enumerate(zip(self.sources, self.encoders))]
        return np.concatenate(tables, axis=-1)


def caption_image(captioner, image, setting=DEFAULT_DECODING):
    """The `Caption` of one image (a path, an open file or a decoded image), read and scaled by the
    same `load_image` and `preprocess` as the feature cache, with its maps if the run attends.
    Raises ImageError, naming the image, for anything unusable."""
    return caption_photos(captioner, [captioner.read(image)], setting)[0]


def caption_photos(captioner, photos, setting=DEFAULT_DECODING):
    """The `Caption`s of photos as `captioner.read` gives them, encoded in one batch and decoded
    together."""
    return decode(captioner.decoder, captioner.features(photos), setting)


def caption_image_files(captioner, paths, setting=DEFAULT_DECODING):
    """Captions of image files, and apart from them why each unreadable file was skipped:
    ({path: Caption}, {path: the ImageError's message, which names the file})."""
    captions, unreadable = {}, {}
    for path in paths:
        try:
            captions[str(path)] = caption_image(captioner, path, setting)
        except ImageError as e:
            unreadable[str(path)] = str(e)
    return captions, unreadable
