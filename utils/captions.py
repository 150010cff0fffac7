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

__all__ = ["CaptionFileError", "MAX_CAPTION_WORDS", "CaptionFile", "read_text", "detect_format",
           "read_captions", "read_split_file", "seeded_split", "keep_existing", "tokenize",
           "clean_caption"]


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
