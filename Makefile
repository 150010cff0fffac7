# The two commands of the README:
#   make run    runs every notebook in order (papermill) on DATASET (default: the offline sample);
#               executed copies, with their outputs, land in outputs/DATASET/ (also as HTML)
#   make test   runs the linter (ruff, configured in pyproject.toml), then the test suite, which
#               also executes every notebook on the sample dataset, one test file per CPU core
#               (pytest-xdist; a file's tests share what they execute)
#   make app    serves the web page (app.py) that captions uploaded photos with the runs in models/
#   make colab REPO_URL=https://github.com/OWNER/NAME
#               writes your repository's address into utils/colab.py, every notebook's setup cell
#               and the "Open in Colab" badges (README and notebooks); commit and push after it.
#               It needs Python alone, not the virtual environment.
# run, test and app create the virtual environment .venv/ from the requirements files when needed,
# with this repository's package, utils, installed in it in editable mode (pyproject.toml).
PYTHON ?= python3
DATASET ?= sample
BIN := .venv/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: run test app colab clean

.venv/.run-deps: requirements.txt requirements-colab.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv .venv
	$(PIP) -r requirements.txt
	$(PIP) --no-deps --editable .
	touch $@

.venv/.test-deps: .venv/.run-deps requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

run: .venv/.run-deps
	$(BIN)/python notebooks/run.py --dataset $(DATASET)

test: .venv/.test-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n auto --dist loadfile

app: .venv/.run-deps
	$(BIN)/streamlit run app.py

colab:
	@test -n "$(REPO_URL)" || { echo "usage: make colab REPO_URL=https://github.com/OWNER/NAME"; exit 2; }
	$(PYTHON) colab/repo_url.py "$(REPO_URL)"
	@echo "REPO_URL written into utils/colab.py, the setup cells and the badges: commit, push, open a badge"

clean:
	rm -rf outputs/sample data/sample models/sample-*
