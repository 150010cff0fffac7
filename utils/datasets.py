"""Datasets by name: Flickr8k as users have it (found, or downloaded once), and the embedded
sample dataset, made offline.

The sample dataset is coloured shapes with five captions each, in Flickr8k's layout. Made from a
seed in seconds, so a newcomer without internet (and CI) runs the whole notebook sequence. The
captions are learnable from the pixels, which lets the tests show that the pipeline really learns
rather than memorising frequent words.
"""
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from .download import DownloadError, check_zip, download_file, extract_zip
from .files import DATA_DIR, atomic_path, portable_path, read_json, require, resolve_path, write_json
from .prepared import IMAGE_DIR_NAMES, SPLIT_FILE_NAMES

__all__ = ["FLICKR8K_URL", "FLICKR8K_ZIPS", "KAGGLE_ZIPS", "FLICKR8K_SPLITS", "LOCAL_DIR_VARIABLE",
           "DatasetFiles", "find_flickr8k", "extraction_dir", "extract_images", "images_folder",
           "NO_PHOTOS",
           "COLOURS", "BACKGROUNDS", "SHAPES", "sample_scene", "make_sample_dataset"]

# ---------------------------------------------------------------------------------------------
# Flickr8k, in whichever form the user has it
# ---------------------------------------------------------------------------------------------

FLICKR8K_URL = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"
FLICKR8K_ZIPS = ("Flickr8k_Dataset.zip", "Flickr8k_text.zip")  # the original distribution
KAGGLE_ZIPS = ("archive.zip", "flickr8k.zip")  # Kaggle's copy, from its web page or its CLI
# The official split files, for Kaggle's copy, which has none (scores stay comparable with the
# papers'). As in the public text zip: 5,997 train names (three of 6,000 are absent), 1,000 dev,
# 1,000 test.
FLICKR8K_SPLITS = Path(__file__).parent / "flickr8k_splits"
# Set (on Colab, by utils.colab) to a folder on the machine's own disk: zipped images are
# extracted there rather than beside their zip, which lies on Google Drive, where reading
# thousands of small files is slow.
LOCAL_DIR_VARIABLE = "IMAGE_CAPTIONING_LOCAL_DIR"
# What a notebook prints in place of a figure of photos, for a features-only dataset.
NO_PHOTOS = ("No photos to show: this dataset's images are not on this machine (its features "
             "were given: FEATURES in notebook 01).")


class DatasetFiles(NamedTuple):
    """What notebook 01 reads: the images, the caption file, the split files (split -> path), and
    the zip the images came out of ({"path", "folder"}), if they did."""
    images_dir: Path
    captions_file: Path
    split_files: dict
    images_zip: dict = None


def extraction_dir(zip_path):
    """Where a zip's images are extracted: beside it, or under $IMAGE_CAPTIONING_LOCAL_DIR."""
    zip_path = Path(os.path.abspath(zip_path))
    local = os.environ.get(LOCAL_DIR_VARIABLE)
    if not local:
        return zip_path.parent / zip_path.stem
    return Path(local) / str(zip_path.parent).lstrip("/") / zip_path.stem


def extract_images(zip_path, folder):
    """The images folder `folder` of `zip_path`, checked and extracted once per machine."""
    target = extraction_dir(zip_path)
    done = target / f".{folder}.extracted"
    if not done.is_file():
        check_zip(zip_path)
        print(f"extracting {folder}/ of {zip_path} into {target}", flush=True)
        extract_zip(zip_path, target, f"{folder}/")
        done.write_text("ok\n")
    return target / folder


def images_folder(prepared):
    """The images of a prepared dataset; None for a features-only one (NO_PHOTOS says so). Those
    that came out of a zip are extracted again where this machine lacks them: a new Colab
    runtime has an empty disk, but the zip is on Drive."""
    if prepared.images_dir is None:
        return None
    if prepared.images_zip:
        zipped = prepared.images_zip
        return extract_images(resolve_path(zipped["path"]), zipped["folder"])
    return require(prepared.images_dir, "01_prepare_captions")


def find_flickr8k(root=DATA_DIR / "flickr8k", base_url=FLICKR8K_URL):
    """Flickr8k under `root` in any of its common forms, as `DatasetFiles`:

    - extracted: an images folder (`Flicker8k_Dataset/`, or Kaggle's `Images/`) and a caption
      file (`Flickr8k.token.txt`, also inside `Flickr8k_text/`, or Kaggle's `captions.txt`);
    - Kaggle's zip (`archive.zip` or `flickr8k.zip`), in `root` or `root/downloads`;
    - the two original zips, in `root` or `root/downloads`; those missing are downloaded from
      `base_url` (a mirror holding the same two zips, for instance) when nothing else is there.

    A zip is checked before anything is extracted. Without split files (Kaggle's copy), the
    official ones are used.
    """
    root = Path(root)
    text_dirs = (root, root / "Flickr8k_text")
    captions_file = next((p for p in [*(d / "Flickr8k.token.txt" for d in text_dirs),
                                      root / "captions.txt"] if p.is_file()), None)
    images_dir = next((p for n in IMAGE_DIR_NAMES for p in (root / n, root / n / n) if p.is_dir()),
                      None)
    zips = {p.name: p for d in (root, root / "downloads") if d.is_dir() for p in d.glob("*.zip")}
    kaggle = next((zips[n] for n in KAGGLE_ZIPS if n in zips), None)
    images_zip = None
    if images_dir is None and kaggle:
        images_zip = {"path": portable_path(kaggle), "folder": "Images"}
        if captions_file is None:
            check_zip(kaggle)
            extract_zip(kaggle, root, "captions.txt")
            captions_file = root / "captions.txt"
            if not captions_file.is_file():
                raise DownloadError(f"{kaggle}: no captions.txt in it; is it Kaggle's Flickr8k?")
    else:
        for name, missing in zip(FLICKR8K_ZIPS, (images_dir is None, captions_file is None)):
            if not missing:
                continue
            path = zips.get(name) or _download_flickr8k_zip(name, root, base_url)
            if name == "Flickr8k_Dataset.zip":
                images_zip = {"path": portable_path(path), "folder": "Flicker8k_Dataset"}
            else:
                check_zip(path, delete_if_bad=path.parent == root / "downloads")
                extract_zip(path, root)
                captions_file = root / "Flickr8k.token.txt"
    if images_zip:
        images_dir = extract_images(resolve_path(images_zip["path"]), images_zip["folder"])
    split_dir = next((d for d in (captions_file.parent, root)
                      if all((d / n).is_file() for n in SPLIT_FILE_NAMES.values())), FLICKR8K_SPLITS)
    split_files = {split: split_dir / name for split, name in SPLIT_FILE_NAMES.items()}
    return DatasetFiles(images_dir, captions_file, split_files, images_zip)


def _download_flickr8k_zip(name, root, base_url):
    """One of the two original zips, downloaded into `root/downloads` (resuming) and checked."""
    try:
        path = download_file(base_url + name, root / "downloads" / name)
    except DownloadError as e:
        raise DownloadError(
            f"Flickr8k is not in {root} and {name} could not be downloaded ({e.reason}): put "
            f"{' and '.join(FLICKR8K_ZIPS)} (from {base_url}), or Kaggle's archive.zip, or their "
            f"extracted folders, into {root}, and run again", e.reason) from None
    check_zip(path, delete_if_bad=True)
    return path


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
    def pick(options):
        return options[rng.integers(len(options))]

    bg = pick(list(BACKGROUNDS))
    c, c2 = rng.choice(list(COLOURS), 2, replace=False)
    s, s2 = pick(SHAPES), pick(SHAPES)
    layout = pick(("one", "same", "stacked", "beside"))
    image = Image.new("RGB", (size, size), BACKGROUNDS[bg])
    draw = ImageDraw.Draw(image)
    def jitter():
        return int(rng.integers(-size // 16, size // 16 + 1))

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
