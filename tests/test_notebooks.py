"""Every notebook, executed end to end with papermill on the sample dataset, in order.

Each stage reads only the files the previous ones wrote (in a temporary data folder), so this also
proves there is no hidden state between notebooks.
"""
import json

import nbformat
import papermill
import pytest

from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Small settings that keep CI fast; the sample dataset is the default of every notebook.
SMALL = {"04_train_model": {"EPOCHS": 15}}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("pipeline")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(notebook):
    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit without outputs"
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(notebook, workdir):
    parameters = {"DATA_DIR": str(workdir / "data"), "MODELS_DIR": str(workdir / "models"),
                  **SMALL.get(notebook.stem, {})}
    out = workdir / notebook.name
    papermill.execute_notebook(str(notebook), str(out), parameters=parameters, cwd=str(REPO),
                               progress_bar=False)
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors
    assert any("image/png" in o.get("data", {}) for c in executed["cells"]
               for o in c.get("outputs", [])), "every notebook shows at least one plot"
