"""Stage 1: captions.

Every common distribution of Flickr8k, Flickr30k and COCO captions is read into one form,
`{image name: [caption, ...]}`; images are split, captions cleaned for training and references
kept for evaluation (the vocabulary built from them: `utils.vocabulary`).
"""
import csv
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .files import portable_path, read_json, require, resolve_path, write_json

__all__ = ["CaptionFileError", "MAX_CAPTION_WORDS", "CaptionFile", "read_text", "detect_format",
           "read_captions", "read_split_file", "seeded_split", "keep_existing", "tokenize", "clean_caption",
           "IMAGE_DIR_NAMES", "CAPTION_FILE_NAMES", "SPLIT_FILE_NAMES", "find_dataset_files",
           "PreparedDataset", "prepare_dataset", "split_captions", "split_images"]


class CaptionFileError(ValueError):
    """A caption or split file that cannot be read; the message names the file and line."""


# A caption longer than this is reported and left out, so no single line can blow the maximum
# length (and with it the model's input and memory): Flickr8k's longest has 38 words.
MAX_CAPTION_WORDS = 100
MAX_LINE_CHARS = 10_000  # a longer line is not parsed at all (the csv module's limit: 131,072)


# ---------------------------------------------------------------------------------------------
# Reading caption files
# ---------------------------------------------------------------------------------------------

@dataclass
class CaptionFile:
    path: str
    format: str
    captions: dict                                # image name -> raw captions, in file order
    splits: dict = None                           # split -> names; only Karpathy's JSON has them
    malformed: list = field(default_factory=list) # "file:line: why", for lines that were skipped
    notes: list = field(default_factory=list)     # "file:line: what", for odd lines that were kept
    records: int = 0                              # captions read: kept + skipped


def read_text(path):
    """A whole text file as str, with errors that name the file (and line, for bad bytes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CaptionFileError(f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x})") from None


def detect_format(text, path="<text>"):
    """Recognise a caption file by its content, so a renamed file still reads."""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        return "karpathy_json"
    first = _lines(stripped)[0] if stripped else ""
    header = first.lower().replace(" ", "")
    if re.match(r"[^\t]+#\d+\t", first):
        return "flickr_token"
    if header.startswith("image_name|"):
        return "flickr30k_csv"
    if header.startswith("image,caption"):
        return "kaggle_csv"
    raise CaptionFileError(
        f"{path}:1: not a caption file this project knows (Flickr8k.token.txt, Kaggle captions.txt, "
        f"Flickr30k results.csv or Karpathy's dataset_*.json); first line: {first[:80]!r}")


def _lines(text):
    """A file's lines, split at line feeds alone: `str.splitlines` would also cut a caption at a
    form feed, NEL or U+2028 inside it (the caption keeps them; cleaning reads them as spaces)."""
    return [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]


def _name_problem(name):
    """Why an image name from a caption file cannot be used, or None: it must stay inside the
    images folder (no absolute path, no '..'), or a caption file could read any file."""
    if Path(name).is_absolute() or ".." in Path(name).parts or name.startswith("~"):
        return f"image name {name!r} points outside the images folder"
    return None


def _token_lines(lines):
    """`NAME.jpg#N<TAB>caption`, the original Flickr8k/Flickr30k token files."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        name, hash_, number = key.rpartition("#")
        if not tab or not hash_ or not number.strip().isdigit() or not caption.strip():
            yield lineno, None, "expected NAME#N<TAB>caption"
        else:
            yield lineno, name.strip(), caption.strip()


def _kaggle_lines(lines):
    """`image,caption` CSV with a header; captions holding commas are quoted. Read line by line:
    a quote left open must not swallow the lines after it, as one CSV record would."""
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            yield lineno, None, f"a line of {len(line):,} characters, over {MAX_LINE_CHARS:,}"
            continue
        row = next(csv.reader([line]))
        # An unquoted comma splits the caption in more cells: join them back.
        if len(row) < 2 or not row[0].strip() or not ",".join(row[1:]).strip():
            yield lineno, None, "expected image,caption"
        else:
            yield lineno, row[0].strip(), ",".join(row[1:]).strip()


_FLICKR30K_LINE = re.compile(r"\s*([^|]+?)\s*\|\s*(\d+)\s*\|?\s*(.*)")


def _flickr30k_lines(lines):
    """`image_name| comment_number| comment`; one line of the real file lacks its second `|`."""
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        match = _FLICKR30K_LINE.fullmatch(line)
        if not match or not match.group(3).strip():
            yield lineno, None, "expected image_name| comment_number| comment"
        else:
            yield lineno, match.group(1), match.group(3).strip()


KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def _read_karpathy(text, path):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CaptionFileError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    except RecursionError:
        raise CaptionFileError(f"{path}: JSON nested too deeply to be a caption file") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CaptionFileError(f"{path}:1: expected Karpathy's format, {{'images': [...]}}")
    captions, splits, malformed, first_seen = {}, {}, [], {}
    for i, image in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        try:
            name = str(Path(image.get("filepath", "")) / image["filename"])
            sentences = [s["raw"].strip() for s in image["sentences"]]
            split = image["split"]
        except (KeyError, TypeError, AttributeError):
            malformed.append(f"{where}: expected filename, split and sentences")
            continue
        if split not in KARPATHY_SPLITS:
            malformed.append(f"{where}: unknown split {split!r} (train, restval, val or test)")
        elif _name_problem(name):
            malformed.append(f"{where}: {_name_problem(name)}")
        elif name in first_seen:
            malformed.append(f"{where}: {name} again (first at images[{first_seen[name]}])")
        else:
            first_seen[name] = i
            captions[name] = []
            for k, sentence in enumerate(sentences):
                problem = _caption_problem(sentence)
                if problem:
                    malformed.append(f"{where}.sentences[{k}]: {problem}")
                else:
                    captions[name].append(sentence)
            splits.setdefault(KARPATHY_SPLITS[split], []).append(name)
    return captions, splits, malformed


def _caption_problem(caption):
    words = len(caption.split())
    if not words:
        return "empty caption"
    if words > MAX_CAPTION_WORDS:
        return f"a caption of {words:,} words, over {MAX_CAPTION_WORDS}"
    return None


_LINE_READERS = {"flickr_token": _token_lines, "kaggle_csv": _kaggle_lines,
                 "flickr30k_csv": _flickr30k_lines}


def read_captions(path):
    """Read any supported caption file into a `CaptionFile`. Every record is counted: malformed
    lines and over-long captions are skipped, repeated captions and unbalanced quotes noted, each
    listed with file and line."""
    text = read_text(path)
    fmt = detect_format(text, path)
    notes = []
    if fmt == "karpathy_json":
        captions, splits, malformed = _read_karpathy(text, path)
        records = sum(len(c) for c in captions.values()) + len(malformed)
    else:
        captions, splits, malformed, seen, records = {}, None, [], {}, 0
        lines = _lines(text)
        for lineno, name, caption in _LINE_READERS[fmt](lines):
            records += 1
            problem = caption if name is None else _name_problem(name) or _caption_problem(caption)
            if problem:
                malformed.append(f"{path}:{lineno}: {problem}")
                continue
            # Kept, as the published references keep them (Flickr8k's token file repeats ten).
            if (name, caption) in seen:
                notes.append(f"{path}:{lineno}: the same caption of {name} as line "
                             f"{seen[name, caption]}, kept")
            if fmt == "kaggle_csv" and lines[lineno - 1].count('"') % 2:
                notes.append(f"{path}:{lineno}: an unbalanced quote, read as this line alone")
            seen.setdefault((name, caption), lineno)
            captions.setdefault(name, []).append(caption)
    if not captions:
        raise CaptionFileError(f"{path}: no caption could be read" +
                               (f"; first problem: {malformed[0]}" if malformed else ""))
    if malformed:
        warnings.warn(f"{path}: skipped {len(malformed)} of {records} captions, first: "
                      f"{malformed[0]}", stacklevel=2)
    return CaptionFile(str(path), fmt, captions, splits, malformed, notes, records)


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------

def read_split_file(path):
    """Image names, one a line, as in Flickr_8k.trainImages.txt."""
    return [line.strip() for line in _lines(read_text(path)) if line.strip()]


def seeded_split(names, val_size, test_size, seed=0):
    """Deterministic train/val/test split; sizes are counts, or fractions when below 1."""
    names = sorted(names)
    n_val, n_test = (round(s * len(names)) if 0 < s < 1 else int(s) for s in (val_size, test_size))
    if n_val + n_test >= len(names):
        raise ValueError(f"val ({n_val}) + test ({n_test}) leave no training images of {len(names)}")
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    return {"train": sorted(order[n_val + n_test:]), "val": sorted(order[:n_val]),
            "test": sorted(order[n_val:n_val + n_test])}


def keep_existing(names, images_dir, feature_names=None):
    """Split names into those whose image is present and those that are not (reported, not
    fatal): on disk in `images_dir`, or, for a features-only dataset, among `feature_names`."""
    if feature_names is not None:
        present = set(feature_names)
        kept = [n for n in names if n in present]
    else:
        kept = [n for n in names if (Path(images_dir) / n).is_file()]
    dropped = sorted(set(names) - set(kept))
    return kept, dropped


# ---------------------------------------------------------------------------------------------
# Cleaning
# ---------------------------------------------------------------------------------------------

_APOSTROPHES = re.compile(r"['\u2019`]")
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def tokenize(text):
    """Lowercase words with punctuation removed: how references are tokenised for BLEU and CIDEr.

    Apostrophes are deleted ("man's" -> "mans") and other punctuation splits words
    ("black-and-white" -> "black and white").
    """
    return _PUNCTUATION.sub(" ", _APOSTROPHES.sub("", text.lower())).split()


def clean_caption(text, drop_one_letter=False):
    """The training form of a caption: `tokenize`, then no token holding a digit.

    Dropping one-letter words ("a") is the seed tutorials' habit; it is off by default because
    captions without articles read badly and score lower against references that have them.
    """
    words = [w for w in tokenize(text) if w.isalpha()]
    if drop_one_letter:
        words = [w for w in words if len(w) > 1]
    return " ".join(words)


# ---------------------------------------------------------------------------------------------
# Finding a dataset on disk and saving what later stages read
# ---------------------------------------------------------------------------------------------

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
