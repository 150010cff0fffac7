"""Google Colab: each notebook on its own runtime, with what must last on Google Drive.

On Colab every notebook gets a fresh machine whose disk is wiped when the runtime recycles. The
setup cell of each notebook clones the repository and calls `setup_colab`, which installs what
Colab lacks (requirements-colab.txt, on top of Colab's own TensorFlow and Jupyter), mounts Drive
and makes the repository's `data/`, `models/` and `glove/` links to folders on it. So notebook 02
finds what notebook 01 wrote, today or next week, with the same relative paths as on a laptop.
Zipped images are extracted to the runtime's own disk instead (`LOCAL_DIR_VARIABLE`), once per
runtime: reading thousands of small files from Drive is slow.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .datasets import LOCAL_DIR_VARIABLE
from .files import REPO_ROOT

__all__ = ["REPO_URL", "on_colab", "default_dataset", "setup_colab", "PERSISTENT_FOLDERS"]

# The repository on GitHub, the one place it is set: `make colab REPO_URL=...`
# (colab/repo_url.py) writes it here, into every notebook's setup cell and into the "Open in
# Colab" badges (README and notebooks).
REPO_URL = "https://github.com/your-account/image-captioning.git"
PLACEHOLDER = "your-account"  # in REPO_URL until it is set: the setup cell then stops and says so
PERSISTENT_FOLDERS = ("data", "models", "glove")  # what lives on Drive: every stage's output


def on_colab():
    return "google.colab" in sys.modules


def default_dataset(dataset=None):
    """The DATASET a notebook works on: `dataset` when set; else Flickr8k on Colab, where its
    download is quick and a GPU trains on it, and the offline sample of shapes everywhere else.
    Each notebook decides alone, so on Colab all five agree without an edit."""
    return dataset or ("flickr8k" if on_colab() else "sample")


def setup_colab(drive_folder, runtime_dir=REPO_ROOT.parent):
    """Install what Colab lacks, then keep `PERSISTENT_FOLDERS` in `drive_folder` of My Drive
    (None: on the runtime's disk, lost when it recycles). `runtime_dir` is the folder the
    repository was cloned into, /content on Colab; Drive is mounted at its `drive/`."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-r", str(REPO_ROOT / "requirements-colab.txt")], check=True)
    runtime_dir = Path(runtime_dir)
    os.environ[LOCAL_DIR_VARIABLE] = str(runtime_dir / "local")
    if drive_folder is None:
        print("DRIVE_FOLDER is None: data/ and models/ are on this runtime's disk and vanish "
              "with it; the next notebook, on its own runtime, will not find them.")
        return None
    from google.colab import drive
    drive.mount(str(runtime_dir / "drive"))
    home = runtime_dir / "drive" / "MyDrive" / drive_folder
    for name in PERSISTENT_FOLDERS:
        link_to_drive(REPO_ROOT / name, home / name)
    print(f"{', '.join(f'{n}/' for n in PERSISTENT_FOLDERS)} are kept on Google Drive in {home}")
    print(gpu_status())
    return home


def gpu_status():
    """One line: the runtime's GPU, or how to get one. (nvidia-smi, not TensorFlow: notebooks 01
    and 03 never load TensorFlow.)"""
    found = shutil.which("nvidia-smi") and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip()
    if found:
        return f"GPU: {found.splitlines()[0]}"
    return ("No GPU on this runtime: notebooks 02 and 04 will be slow on real photos. "
            "Runtime > Change runtime type > T4 GPU, then run this notebook again.")


def link_to_drive(folder, target):
    """Make `folder` a link to `target`, moving over what the clone put in it (its README)."""
    target.mkdir(parents=True, exist_ok=True)
    if folder.is_symlink():
        if folder.resolve() == target.resolve():
            return
        folder.unlink()
    elif folder.is_dir():
        for item in folder.iterdir():
            if not (target / item.name).exists():
                shutil.move(str(item), target / item.name)
        shutil.rmtree(folder)
    folder.symlink_to(target, target_is_directory=True)
