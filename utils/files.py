"""Small file helpers shared by every stage: atomic writes, JSON, the repository's folders.

Every artefact a later stage reads is written atomically (to a temporary file in the same folder,
then renamed), so an interrupted kernel never leaves a half-written file behind.
"""
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["REPO_ROOT", "DATA_DIR", "GLOVE_DIR", "atomic_path", "atomic_folder", "write_json", "read_json",
           "portable_path", "resolve_path", "save_npy", "dataset_paths", "run_name", "require"]

# Not resolved: on Colab data/ and models/ are links to Google Drive, and the paths this package
# stores must stay the repository's own (data/...), the same on every runtime.
REPO_ROOT = Path(os.path.abspath(__file__)).parent.parent
DATA_DIR = REPO_ROOT / "data"
GLOVE_DIR = REPO_ROOT / "glove"


# mkstemp makes files only their owner can read; what this package writes gets the permissions
# of any other new file (umask applied), so an app running as another user can read the runs.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (same suffix, for writers that check it); it replaces
    `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)  # all of them: Keras wants ".weights.h5"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name.removesuffix(suffix)}.",
                               suffix=f".tmp{suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_folder(path):
    """Yield a temporary folder beside `path`; it replaces `path` (a folder, removed first) only
    if the block succeeds, so a reader finds the old folder or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path):
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except RecursionError:  # a hostile file's [[[[...]]]]: an error naming it, not a crash
            raise ValueError(f"{path}: JSON nested too deep to read") from None


def portable_path(path):
    """A path as records store it: relative to the repository, also outside it
    (`../shared/x.npz`), so that a record says where a file lies beside the code, never where it
    lay on the machine that wrote it; absolute only where no relative path exists (another
    drive)."""
    path = os.path.abspath(path)  # links are kept: see REPO_ROOT
    try:
        return os.path.relpath(path, REPO_ROOT)
    except ValueError:
        return path


def resolve_path(path):
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def save_npy(path, array):
    # np.save appends ".npy" to names without it, so hand it an open file instead of the temp name.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def dataset_paths(dataset, data_dir=DATA_DIR):
    """Where each stage reads and writes a dataset's artefacts: one place, so stages agree."""
    root = Path(data_dir) / dataset
    prepared = root / "prepared"
    return {"root": root, "captions": prepared / "captions.json",
            "vocabulary": prepared / "vocabulary.json", "features": root / "features",
            "embedding": prepared / "embedding.npy"}


def run_name(dataset, encoder, features=None):
    """A run's folder name where RUN_NAME is not set, the same in notebooks 04 and 05:
    `<dataset>-<encoder>`, or, trained on features made elsewhere, `<dataset>-<their file>`."""
    return f"{dataset}-{Path(features).stem if features else encoder}"


def require(path, notebook):
    """`path`, or, when a stage's input is missing, an error naming the notebook that writes it."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} not found: run notebooks/{notebook}.ipynb first, "
                                "with the same DATASET and DATA_DIR")
    return Path(path)
