"""Google Colab: each notebook on its own runtime, with what must last on Google Drive.

On Colab every notebook gets a fresh machine whose disk is wiped when the runtime recycles. The
setup cell of each notebook clones the repository and calls `setup_colab`, which installs what
Colab lacks (requirements-colab.txt, on top of Colab's own TensorFlow and Jupyter), mounts Drive
and makes the repository's `data/`, `models/` and `glove/` links to folders on it. So notebook 02
finds what notebook 01 wrote, today or next week, with the same relative paths as on a laptop.
Zipped images are extracted to the runtime's own disk instead (`LOCAL_DIR_VARIABLE`), once per
runtime: reading thousands of small files from Drive is slow.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .datasets import LOCAL_DIR_VARIABLE
from .files import REPO_ROOT

__all__ = ["REPO_URL", "on_colab", "setup_colab", "PERSISTENT_FOLDERS", "colab_link",
           "write_repo_url"]

# The repository on GitHub, the one place it is set: `make colab REPO_URL=...` writes it here,
# into every notebook's setup cell and into the "Open in Colab" badges (README and notebooks).
REPO_URL = "https://github.com/your-account/image-captioning.git"
PLACEHOLDER = "your-account"  # in REPO_URL until it is set: the setup cell then stops and says so
BRANCH = "main"  # the badges open the notebooks of this branch
PERSISTENT_FOLDERS = ("data", "models", "glove")  # what lives on Drive: every stage's output


def on_colab():
    return "google.colab" in sys.modules


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


# ---------------------------------------------------------------------------------------------
# Writing the repository's address into badges and setup cells (run locally, not on Colab)
# ---------------------------------------------------------------------------------------------

BADGE = re.compile(r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/"
                   r"colab-badge\.svg\)\]\(([^)]*)\)")
SETUP_LINE = re.compile(r'^REPO_URL = "[^"]*"', re.M)


def colab_link(repo_url, notebook):
    """The address that opens `notebook` (notebooks/NAME.ipynb) of the GitHub repository on Colab."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?/?", repo_url)
    if not match:
        raise ValueError(f"{repo_url}: Colab opens notebooks from GitHub, "
                         "https://github.com/OWNER/NAME")
    owner, name = match.groups()
    return (f"https://colab.research.google.com/github/{owner}/{name}/blob/{BRANCH}/"
            f"notebooks/{notebook}")


def badge(repo_url, notebook):
    return ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_link(repo_url, notebook)})")


def write_repo_url(repo_url, root=REPO_ROOT, badges=True):
    """Set `repo_url` in this module, in every notebook's setup cell and (GitHub addresses only)
    in the badges: the notebooks' first cells and the README's table of notebooks."""
    root = Path(root)
    module = root / "utils" / "colab.py"
    module.write_text(SETUP_LINE.sub(f'REPO_URL = "{repo_url}"', module.read_text(), count=1))
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            text = "".join(cell["source"])
            text = SETUP_LINE.sub(f'REPO_URL = "{repo_url}"', text)
            if badges:
                text = BADGE.sub(lambda m: badge(repo_url, path.name), text)
            cell["source"] = text.splitlines(keepends=True)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    if badges:
        readme = root / "README.md"
        readme.write_text(BADGE.sub(lambda m: badge(repo_url, m.group(1).rsplit("/", 1)[-1]),
                                    readme.read_text()))

