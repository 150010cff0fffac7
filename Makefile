# The two commands of the README:
#   make run    runs every notebook in order (papermill) on DATASET (default: the offline sample);
#               executed copies, with their outputs, land in outputs/ (also as HTML)
#   make test   runs the test suite, which also executes every notebook on the sample dataset
#   make app    serves the web page (app.py) that captions uploaded photos with the runs in models/
#   make colab REPO_URL=https://github.com/OWNER/NAME
#               writes your repository's address into utils/colab.py, every notebook's setup cell
#               and the "Open in Colab" badges (README and notebooks); commit and push after it
# Both create the virtual environment .venv/ from the requirements files when needed.
PYTHON ?= python3
DATASET ?= sample
BIN := .venv/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: run test app colab clean

.venv/.run-deps: requirements.txt requirements-colab.txt
	test -x $(BIN)/python || $(PYTHON) -m venv .venv
	$(PIP) -r requirements.txt
	touch $@

.venv/.test-deps: .venv/.run-deps requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

run: .venv/.run-deps
	mkdir -p outputs
	for nb in notebooks/[0-9]*.ipynb; do \
		$(BIN)/papermill "$$nb" "outputs/$$(basename $$nb)" -p DATASET $(DATASET) || exit 1; \
	done
	$(BIN)/jupyter nbconvert --to html --log-level ERROR outputs/[0-9]*.ipynb
	@echo; echo "Done. The executed notebooks, with their captions, scores and plots, are in outputs/"
	@echo "(open outputs/05_decode_and_evaluate.html in a browser); caption your own photos with: make app"

test: .venv/.test-deps
	$(BIN)/python -m pytest

app: .venv/.run-deps
	$(BIN)/streamlit run app.py

colab: .venv/.run-deps
	@test -n "$(REPO_URL)" || { echo "usage: make colab REPO_URL=https://github.com/OWNER/NAME"; exit 2; }
	$(BIN)/python -c 'import sys, utils; utils.write_repo_url(sys.argv[1])' "$(REPO_URL)"
	@echo "REPO_URL written into utils/colab.py, the setup cells and the badges: commit, push, open a badge"

clean:
	rm -rf outputs data/sample models/sample-*
