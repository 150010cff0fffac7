"""Stage 1: a dataset found on disk, split and cleaned, and saved as what later stages read.

`find_dataset_files` finds the images, the captions file and the split files under a folder by
their usual names; `prepare_dataset` reads them (`utils.captions`), splits the images and keeps
each one's cleaned captions and raw references in one `PreparedDataset` file.
"""
import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

from .captions import clean_caption, keep_existing, read_captions, read_split_file, seeded_split, tokenize
from .files import portable_path, read_json, require, resolve_path, write_json

__all__ = ["IMAGE_DIR_NAMES", "CAPTION_FILE_NAMES", "SPLIT_FILE_NAMES", "find_dataset_files",
           "PreparedDataset", "prepare_dataset", "split_captions", "split_images"]

IMAGE_DIR_NAMES = ("Images", "images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k_images")
CAPTION_FILE_NAMES = ("Flickr8k.token.txt", "captions.txt", "results.csv", "results_20130124.token",
                      "dataset_flickr8k.json", "dataset_flickr30k.json", "dataset_coco.json")
SPLIT_FILE_NAMES = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
                    "test": "Flickr_8k.testImages.txt"}


def find_dataset_files(root):
    """Images folder, caption file and official split files (if any) under a dataset folder."""
    root = Path(root)
    candidates = [p for name in IMAGE_DIR_NAMES for p in (root / name, root / name / name)]
    images_dir = next((p for p in candidates if p.is_dir()), None)
    captions_file = next((root / n for n in CAPTION_FILE_NAMES if (root / n).is_file()), None)
    if images_dir is None or captions_file is None:
        raise FileNotFoundError(
            f"{root}: expected an images folder (one of {', '.join(IMAGE_DIR_NAMES)}) and a caption "
            f"file (one of {', '.join(CAPTION_FILE_NAMES)}); pass their paths explicitly otherwise")
    splits = {s: root / n for s, n in SPLIT_FILE_NAMES.items() if (root / n).is_file()}
    return images_dir, captions_file, splits


@dataclass
class PreparedDataset:
    """What stage 1 saves: every kept image with its split, training captions and references."""
    images_dir: str     # None: a features-only dataset, whose photos are not on this machine
    images: dict        # name -> {"split": ..., "captions": [clean], "references": [[tokens]]}
    options: dict
    images_zip: dict = None  # {"path", "folder"} when the images come out of a zip: see images_folder

    def names(self, split):
        return sorted(n for n, info in self.images.items() if info["split"] == split)

    def raw_references(self, names):
        """Each image's reference sentences as its caption file has them: what the COCO
        evaluation's tokenizer reads."""
        try:
            return [self.images[n]["raw_references"] for n in names]
        except KeyError:
            raise ValueError("captions.json was written before raw references were kept: run "
                             "notebooks/01_prepare_captions.ipynb again") from None

    def with_captions(self, extra):
        """This dataset with one more training caption for each photo `extra` names ({name:
        clean caption}; an empty caption adds nothing), such as a teacher's; references and the
        other photos unchanged."""
        images = {name: info | {"captions": info["captions"] + [extra[name]]}
                  if extra.get(name) else info for name, info in self.images.items()}
        return dataclasses.replace(self, images=images)

    def save(self, path):
        images_dir = self.images_dir and portable_path(self.images_dir)
        write_json(path, {"images_dir": images_dir, "images_zip": self.images_zip,
                          "options": self.options, "images": self.images})

    @classmethod
    def load(cls, path):
        data = read_json(require(path, "01_prepare_captions"))
        images_dir = data["images_dir"] and str(resolve_path(data["images_dir"]))
        return cls(images_dir, data["images"], data["options"], data.get("images_zip"))


def prepare_dataset(captions_file, images_dir, split_files=None, val_size=0.1, test_size=0.1,
                    seed=0, drop_one_letter=False, images_zip=None, feature_names=None):
    """Read, split, keep images that exist, clean: returns (PreparedDataset, report).

    A features-only dataset (its photos elsewhere, their features given) has `images_dir` None
    and `feature_names`, the names of the features' rows, which stand for the images present.

    Splits come from the official split files when given, else from the caption file (Karpathy's
    JSON), else from a seeded split of the images on disk. `images_zip` ({"path", "folder"}) is
    the zip the images were extracted from, recorded so that a later stage on another machine
    can extract them again.
    """
    caption_file = read_captions(captions_file)
    if (images_dir is None) == (feature_names is None):
        raise ValueError("give the images folder, or for a features-only dataset the names of "
                         "its features, not both")
    present, missing = keep_existing(list(caption_file.captions), images_dir, feature_names)
    if split_files:
        splits = {split: read_split_file(path) for split, path in split_files.items()}
    else:
        splits = caption_file.splits or seeded_split(present, val_size, test_size, seed)
    if missing:
        where = images_dir if feature_names is None else "the features given"
        warnings.warn(f"{len(missing)} image(s) named in {captions_file} are not in {where}, "
                      f"dropped (first: {missing[0]})", stacklevel=2)
    present = set(present)
    images, without_captions, emptied = {}, [], []
    for split, names in splits.items():
        without_captions += [n for n in names if n not in caption_file.captions]
        for name in (n for n in names if n in present):
            raw = caption_file.captions[name]
            cleaned = [clean_caption(c, drop_one_letter) for c in raw]
            emptied += [f"{name}: {r!r}" for r, c in zip(raw, cleaned) if not c]
            images[name] = {"split": split, "captions": [c for c in cleaned if c],
                            "references": [tokenize(c) for c in raw], "raw_references": raw}
    if emptied:
        warnings.warn(f"{len(emptied)} caption(s) empty after cleaning, left out of training "
                      f"(first: {emptied[0]})", stacklevel=2)
    options = {"captions_file": portable_path(captions_file), "format": caption_file.format,
               "split_source": ("split files" if split_files else "caption file"
                                if caption_file.splits else f"seeded (seed {seed})"),
               "drop_one_letter": drop_one_letter}
    report = {"format": caption_file.format, "captions_read": caption_file.records,
              "captions_kept": sum(len(i["captions"]) for i in images.values()),
              "malformed_lines": caption_file.malformed, "notes": caption_file.notes,
              "empty_after_cleaning": emptied,
              "missing_images": missing, "split_names_without_captions": without_captions,
              "images_per_split": {s: sum(i["split"] == s for i in images.values()) for s in splits}}
    images_dir = None if images_dir is None else str(images_dir)
    return PreparedDataset(images_dir, images, options, images_zip), report


def split_images(prepared, split, feature_names):
    """(the images of `split` that have features and captions, in order; those left out).
    `split` is a split of the prepared dataset ("train", "val", "test") or a file of image names,
    one a line; anything else, or a split left with no image, is an error that says so."""
    known = sorted({info["split"] for info in prepared.images.values()})
    if split in known:
        wanted = prepared.names(split)
    elif Path(str(split)).is_file():
        wanted = read_split_file(split)
    else:
        raise ValueError(f"SPLIT = {split!r} is neither a split of this dataset "
                         f"({', '.join(known)}) nor a file of image names, one a line")
    with_features = set(feature_names)
    kept = [n for n in wanted if n in with_features and n in prepared.images]
    if not kept:
        raise ValueError(f"none of the {len(wanted)} images of {split} has both features and "
                         "captions: nothing to caption (check SPLIT and FEATURES)")
    return kept, [n for n in wanted if n not in with_features or n not in prepared.images]


def split_captions(prepared, split):
    """All cleaned captions of one split, flat."""
    return [c for name in prepared.names(split) for c in prepared.images[name]["captions"]]
