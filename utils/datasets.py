"""Datasets by name: Flickr8k, downloaded once, and the embedded sample dataset, made offline.

The sample dataset is coloured shapes with five captions each, in Flickr8k's layout. Made from a
seed in seconds, so a newcomer without internet (and CI) runs the whole notebook sequence. The
captions are learnable from the pixels, which lets the tests show that the pipeline really learns
rather than memorising frequent words.
"""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .captions import SPLIT_FILE_NAMES, find_dataset_files, read_split_file
from .download import DownloadError, check_zip, download_file, extract_zip
from .files import DATA_DIR, atomic_path, read_json, write_json

__all__ = ["FLICKR8K_URL", "FLICKR8K_ZIPS", "download_flickr8k", "COLOURS", "BACKGROUNDS",
           "SHAPES", "sample_scene", "make_sample_dataset"]

# ---------------------------------------------------------------------------------------------
# Flickr8k
# ---------------------------------------------------------------------------------------------

FLICKR8K_URL = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"
FLICKR8K_ZIPS = ("Flickr8k_Dataset.zip", "Flickr8k_text.zip")


def download_flickr8k(root=DATA_DIR / "flickr8k", base_url=FLICKR8K_URL):
    """Download and extract Flickr8k into `root` (images and text files); nothing twice.

    Zips already in `root/downloads/` (fetched by hand on a machine with internet) are used as is.
    `base_url` can point at a mirror holding the same two zips. The download counts as done only
    when every image the official split files name has arrived.
    """
    root = Path(root)
    done = root / ".extracted"
    if done.is_file():
        return root
    for name in FLICKR8K_ZIPS:
        zip_path = download_file(base_url + name, root / "downloads" / name)
        check_zip(zip_path)
        extract_zip(zip_path, root)
    images_dir, _, split_files = find_dataset_files(root)
    named = [n for path in split_files.values() for n in read_split_file(path)]
    missing = [n for n in named if not (images_dir / n).is_file()]
    if not named or missing:
        raise DownloadError(
            f"{root}: {len(missing)} of the {len(named)} images named in the split files "
            f"({', '.join(SPLIT_FILE_NAMES.values())}) are missing from {images_dir}"
            f"{f' (first: {missing[0]})' if missing else ''}; delete {root} and run again")
    done.write_text("ok\n")
    return root


# ---------------------------------------------------------------------------------------------
# The sample dataset
# ---------------------------------------------------------------------------------------------

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220),
           "yellow": (240, 210, 20)}
BACKGROUNDS = {"white": (250, 250, 250), "black": (10, 10, 10)}
SHAPES = ("circle", "square", "triangle")
SAMPLE_CAPTIONS_VERSION = 2  # of the templates below: a new version makes the dataset anew

ONE_SHAPE = ("a {c} {s} on a {bg} background", "a single {c} {s}",
             "one {c} {s} in the middle of a {bg} picture", "there is a {c} {s} on {bg}",
             "a {bg} image with a {c} {s}")
TWO_SAME = ("two {c} {s}s on a {bg} background", "a pair of {c} {s}s", "two {c} {s}s side by side",
            "there are two {c} {s}s", "a {bg} image with two {c} {s}s")
STACKED = ("a {c} {s} above a {c2} {s2}", "a {c2} {s2} below a {c} {s}",
           "a {c} {s} and a {c2} {s2} on a {bg} background", "a {c} {s} on top of a {c2} {s2}",
           "one {c} {s} over one {c2} {s2}")
BESIDE = ("a {c} {s} to the left of a {c2} {s2}", "a {c2} {s2} to the right of a {c} {s}",
          "a {c} {s} next to a {c2} {s2}", "a {c} {s} and a {c2} {s2} on a {bg} background",
          "one {c} {s} beside one {c2} {s2}")


def draw_shape(draw, shape, centre, radius, colour):
    x, y = centre
    box = (x - radius, y - radius, x + radius, y + radius)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=colour)


def sample_scene(rng, size=128):
    """One random picture and its five captions."""
    pick = lambda options: options[rng.integers(len(options))]  # noqa: E731
    bg = pick(list(BACKGROUNDS))
    c, c2 = rng.choice(list(COLOURS), 2, replace=False)
    s, s2 = pick(SHAPES), pick(SHAPES)
    layout = pick(("one", "same", "stacked", "beside"))
    image = Image.new("RGB", (size, size), BACKGROUNDS[bg])
    draw = ImageDraw.Draw(image)
    jitter = lambda: int(rng.integers(-size // 16, size // 16 + 1))  # noqa: E731
    q, r = size // 4, size // 6
    if layout == "one":
        draw_shape(draw, s, (size // 2 + jitter(), size // 2 + jitter()), size // 4, COLOURS[c])
        templates = ONE_SHAPE
    elif layout == "same":
        for x in (q, 3 * q):
            draw_shape(draw, s, (x + jitter() // 2, size // 2 + jitter()), r, COLOURS[c])
        templates = TWO_SAME
    else:
        first, second = ((size // 2, q), (size // 2, 3 * q)) if layout == "stacked" else (
            (q, size // 2), (3 * q, size // 2))
        draw_shape(draw, s, (first[0] + jitter() // 2, first[1] + jitter() // 2), r, COLOURS[c])
        draw_shape(draw, s2, (second[0] + jitter() // 2, second[1] + jitter() // 2), r, COLOURS[c2])
        templates = STACKED if layout == "stacked" else BESIDE
    captions = [t.format(c=c, s=s, c2=c2, s2=s2, bg=bg).capitalize() + " ." for t in templates]
    return image, captions


def make_sample_dataset(root, n_images=400, val_size=50, test_size=50, seed=0, image_size=128):
    """Write the sample dataset under `root`: Images/, Flickr8k.token.txt and the split files.

    Deterministic for a seed; does nothing when `root` already holds the same dataset.
    """
    root = Path(root)
    token_file, params_file = root / "Flickr8k.token.txt", root / "sample_params.json"
    params = {"n_images": n_images, "val_size": val_size, "test_size": test_size, "seed": seed,
              "image_size": image_size, "captions": SAMPLE_CAPTIONS_VERSION}
    if token_file.is_file() and params_file.is_file() and read_json(params_file) == params:
        return root
    rng = np.random.default_rng(seed)
    (root / "Images").mkdir(parents=True, exist_ok=True)
    names, lines = [], []
    for i in range(n_images):
        name = f"shapes_{i:05d}.jpg"
        image, captions = sample_scene(rng, image_size)
        with atomic_path(root / "Images" / name) as tmp:
            image.save(tmp, format="JPEG", quality=95)
        names.append(name)
        lines += [f"{name}#{k}\t{caption}" for k, caption in enumerate(captions)]
    splits = {"test": names[:test_size], "val": names[test_size:test_size + val_size],
              "train": names[test_size + val_size:]}
    for split, file_name in SPLIT_FILE_NAMES.items():
        with atomic_path(root / file_name) as tmp:
            tmp.write_text("\n".join(splits[split]) + "\n")
    with atomic_path(token_file) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    write_json(params_file, params)  # written last: it marks a finished dataset
    return root
