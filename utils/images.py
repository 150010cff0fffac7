"""Reading images: one function for the cached features, for new photos and for the figures.

No TensorFlow here: notebooks, the app and the feature cache all read images through
`decode_image` (any format Pillow reads, EXIF orientation, transparency, 16-bit and float pixels,
decompression bombs refused), then `load_image` for an encoder's square input or `preview_image`
for a person's eyes.
"""
import contextlib
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps

__all__ = ["MAX_IMAGE_PIXELS", "DECODE_SIZE", "ImageError", "decode_image", "load_image",
           "preview_image"]

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
