"""Every notebook, executed end to end with papermill on the sample dataset, in order, once.

Each stage reads only the files the previous ones wrote (in a temporary data folder), so this also
proves there is no hidden state between notebooks. The executed notebooks are shared by every test
here: each test asks for them, so any one of them runs alone as well as with the others.
"""
import ast
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

import utils
from conftest import GRID_INPUT_SIZE, REPO, is_a_caption

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Small settings that keep CI fast; the sample dataset is the default of every notebook.
SMALL = {"04_train_model": {"EPOCHS": 15}}
# A photo of the sample for notebook 05's "caption your own photo" (written by notebook 01).
OWN_PHOTO = "data/sample/Images/shapes_00007.jpg"
# Measured (COCO evaluation): greedy BLEU-4 0.682 on the sample test split after 15 epochs, 0.217
# with shuffled features.
BLEU4_BAR = 0.5
# The attention model through notebooks 02, 04 and 05: grids at GRID_INPUT_SIZE (3x3), few epochs,
# then two of self-critical training. Measured (COCO evaluation) before the second phase: greedy
# BLEU-4 0.482, beam 5 0.742, 0.263 with shuffled features.
ATTENTION = {"02_extract_features": {"GRID": True, "INPUT_SIZE": GRID_INPUT_SIZE},
             "04_train_model": {"ARCHITECTURE": "attention", "EPOCHS": 10,
                                "SELF_CRITICAL_EPOCHS": 2, "SELF_CRITICAL_LEARNING_RATE": 5e-4},
             "05_decode_and_evaluate": {"BEAM_WIDTHS": [5]}}
# Appended to the notebooks that must not load TensorFlow, to look inside their kernels.
TF_PROBE = 'import sys; print("tensorflow loaded:", "tensorflow" in sys.modules)'
WITHOUT_TENSORFLOW = ("01_prepare_captions", "03_glove_embeddings")


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """{notebook stem: executed notebook}, all five run in order in one temporary folder."""
    workdir = tmp_path_factory.mktemp("pipeline")
    executed = {}
    for notebook in NOTEBOOKS:
        nb = nbformat.read(notebook, as_version=4)
        if notebook.stem in WITHOUT_TENSORFLOW:
            nb.cells.append(nbformat.v4.new_code_cell(TF_PROBE))
        source = workdir / f"source-{notebook.name}"
        nbformat.write(nb, source)
        parameters = {"DATA_DIR": str(workdir / "data"), "MODELS_DIR": str(workdir / "models"),
                      **SMALL.get(notebook.stem, {})}
        if notebook.stem.startswith("05"):
            parameters["IMAGE"] = str(workdir / OWN_PHOTO)
        out = workdir / notebook.name
        papermill.execute_notebook(str(source), str(out), parameters=parameters, cwd=str(REPO),
                                   progress_bar=False)
        executed[notebook.stem] = json.loads(out.read_text())
    executed["workdir"] = workdir
    return executed


def outputs(notebook):
    return [o for c in notebook["cells"] for o in c.get("outputs", [])]


def printed(notebook):
    return "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                   for o in outputs(notebook) if o["output_type"] == "stream")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(notebook):
    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit without outputs"
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


def test_every_notebook_has_the_same_setup_cell():
    setups = {p.stem: nbformat.read(p, as_version=4).cells[1].source for p in NOTEBOOKS}
    assert setups["01_prepare_captions"].startswith("# Setup")
    assert len(set(setups.values())) == 1, "the setup cells differ"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_shows_a_plot(notebook, executed):
    cells = executed[notebook.stem]
    assert not [o for o in outputs(cells) if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs(cells)), \
        "every notebook shows at least one plot"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_shows_no_tensorflow_startup_lines(notebook, executed):
    text = printed(executed[notebook.stem])
    for noise in ("E0000", "I0000", "cuInit", "absl::", "oneDNN", "PTBTokenizer"):
        assert noise not in text, noise


@pytest.mark.parametrize("stem", WITHOUT_TENSORFLOW)
def test_notebooks_without_a_model_never_load_tensorflow(stem, executed):
    assert "tensorflow loaded: False" in printed(executed[stem])


def test_importing_utils_does_not_load_tensorflow():
    code = ("import sys, utils; utils.clean_caption('A dog.'); utils.Vocabulary; "
            "assert 'tensorflow' not in sys.modules, 'loaded too early'; "
            "utils.DecodingSetting; assert 'tensorflow' in sys.modules, 'loaded on first use'")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_every_public_name_is_listed_and_only_what_is_used_is_loaded():
    """`dir(utils)` lists the lazily loaded names too (a notebook's tab completion offers them);
    a mistyped name fails at once, and the pure metrics score captions, without TensorFlow."""
    code = ("import sys, utils; assert {'build_caption_model', 'CaptionModel', 'decode', "
            "'caption_scores', 'Vocabulary'} <= set(dir(utils)), 'hidden names'\n"
            "try:\n    utils.beam_serch\nexcept AttributeError as e:\n    assert 'beam_serch' in str(e)\n"
            "assert 'tensorflow' not in sys.modules, 'a mistyped name loaded TensorFlow'\n"
            "scores = utils.caption_scores([['a dog runs on the grass']], ['a dog runs on grass'], "
            "meteor=False)[0]\nassert 0 < scores['bleu1'] < 1, scores\n"
            "assert 'tensorflow' not in sys.modules, 'the metrics loaded TensorFlow'")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter(notebook):
    """`papermill --help-notebook` lists every name the parameters cell sets: a line it cannot
    parse (an apostrophe in notebook 02's GRID comment once) warns at every run and makes
    `-p NAME VALUE` report an unknown parameter."""
    cell = next(c for c in nbformat.read(notebook, as_version=4).cells
                if "parameters" in c.metadata.get("tags", []))
    assigned = [t.id for node in ast.parse(cell.source).body for t in node.targets]
    listed = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", str(notebook)],
                            capture_output=True, text=True, check=True)
    assert "Unable to parse" not in listed.stdout + listed.stderr
    for name in assigned:
        assert re.search(rf"^\s+{name}: ", listed.stdout, re.M), name
    assert "DATASET" in assigned and papermill.inspect_notebook(str(notebook))["DATASET"][
        "default"] == "None"  # Flickr8k on Colab, the sample here: utils.default_dataset


def test_notebook_01_says_what_it_read_in_plain_words(executed):
    text = printed(executed["01_prepare_captions"])
    assert "PosixPath" not in text and "splits:   train data/sample/Flickr_8k.trainImages.txt" \
        in text.replace(str(executed["workdir"]) + "/", "")
    assert "names in the split files without captions: 0 []" in text
    assert not [o for o in outputs(executed["01_prepare_captions"])
                if o.get("name") == "stderr"], "no warning boxes: the report says it all"


def test_notebook_02_explains_its_constant_dimensions(executed):
    text = printed(executed["02_extract_features"])
    assert re.search(r"constant dimensions \d+ of 2048", text)
    markdown = "".join("".join(c["source"]) for c in executed["02_extract_features"]["cells"]
                       if c["cell_type"] == "markdown")
    assert "no constant dimensions" not in markdown and "random weights many" in markdown
    assert not [o for o in outputs(executed["02_extract_features"])
                if "application/vnd.jupyter.widget-view+json" in o.get("data", {})], \
        "a progress widget renders blank in a saved notebook"


@pytest.mark.parametrize("notebook", ["01_prepare_captions", "02_extract_features",
                                      "03_glove_embeddings", "04_train_model",
                                      "05_decode_and_evaluate"])
def test_a_notebook_run_shows_no_error_box(executed, notebook):
    """Nothing on stderr, which a saved notebook shows as an error-coloured box: progress bars
    are on stdout, and TensorFlow's start-up lines are hidden."""
    assert not ["".join(o["text"])[:200] for o in outputs(executed[notebook])
                if o.get("name") == "stderr"]


def test_notebook_defaults_are_the_package_defaults():
    """Notebook 04's training settings are TrainingConfig's and ModelConfig's defaults, and
    notebook 05 decodes by default (its first beam width) as DEFAULT_DECODING says."""
    values = {}
    for stem in ("04_train_model", "05_decode_and_evaluate"):
        for name, p in papermill.inspect_notebook(str(REPO / "notebooks" / f"{stem}.ipynb")).items():
            values[name] = ast.literal_eval(p["default"])
    training = utils.config_from_parameters(utils.TrainingConfig, values)
    assert training == utils.TrainingConfig()
    model = utils.config_from_parameters(utils.ModelConfig, values, vocab_size=1, feature_dim=1)
    assert model == utils.ModelConfig(1, 1)
    # Every field is a parameter of notebook 04, but the sizes it reads off its data.
    fields = {f.name.upper() for c in (utils.ModelConfig, utils.TrainingConfig)
              for f in dataclasses.fields(c)}
    assert fields - set(values) == {"VOCAB_SIZE", "FEATURE_DIM", "EMBEDDING_DIM", "POSITIONS"}
    assert utils.DecodingSetting(values["BEAM_WIDTHS"][0], values["LENGTH_PENALTY"],
                                 values["NO_REPEAT_NGRAM"]) == utils.DEFAULT_DECODING


def test_notebook_04_shows_one_line_and_captions_per_epoch(executed):
    text = printed(executed["04_train_model"])
    assert "training on one device: batches of 64 captions\n" in text  # STRATEGY = None
    epochs = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == len(utils.read_json(
        executed["workdir"] / "models" / "sample-inceptionv3" / "history.json"))
    assert all("validation loss" in line and "learning rate" in line for line in epochs)
    captions = [line for line in text.splitlines() if line.startswith("    shapes_")]
    assert len(captions) == 3 * len(epochs)  # their words are the model's: any, none included
    assert "\b" not in text  # no progress bar redrawn with backspaces
    assert len(text) < 30_000
    assert "ran out of data" not in text
    # Before training: the photos captioned after each epoch, with references, and why a sample
    # run's captions can name a wrong shape (its encoder's random weights).
    figure = next(i for i, c in enumerate(executed["04_train_model"]["cells"])
                  if "Captioned after every epoch" in "".join(c.get("source", "")))
    assert any("image/png" in o.get("data", {})
               for o in executed["04_train_model"]["cells"][figure]["outputs"])
    assert utils.RANDOM_ENCODER_NOTE in text
    # The objective it trains with, in a cell of its own (LABEL_SMOOTHING 0.1: our loss), and no
    # self-critical step where that phase is off.
    assert "def call(self, y_true, y_pred):" in text and "def reinforce_step(" not in text


def test_notebook_05_shows_examples_best_worst_and_your_own_photo(executed):
    pictures = [o for o in outputs(executed["05_decode_and_evaluate"]) if "image/png" in o.get("data", {})]
    assert len(pictures) == 5  # the scores, the first, best and worst captioned, your own photo
    text = printed(executed["05_decode_and_evaluate"])
    # What runs during the minutes of scoring, and how long each step took.
    assert re.search(r"\[1/4\] greedy, no repeated 2-gram: decoding 50 images, then scoring them "
                     r"\(PTB tokenizer and METEOR on Java, BLEU, ROUGE-L, CIDEr-D\)\.\.\.\n"
                     r"    decoded in [\d.]+ s, scored in [\d.]+ s\n", text)
    assert "[4/4] greedy, no repeated 2-gram, shuffled images" in text
    assert utils.RANDOM_ENCODER_NOTE in text and ".venv" not in text
    line = next(line for line in printed(executed["05_decode_and_evaluate"]).splitlines()
                if line.startswith(str(executed["workdir"] / OWN_PHOTO)))
    vocab = utils.Vocabulary.load(executed["workdir"] / "models" / "sample-inceptionv3" /
                                  "vocabulary.json")
    assert is_a_caption(line.split(": ", 1)[1], vocab)


def test_notebook_05_shows_the_plain_greedy_loop_agreeing_with_the_fast_one(executed):
    lines = printed(executed["05_decode_and_evaluate"]).splitlines()
    plain = next(x for x in lines if x.startswith("one word at a time:")).split(":", 1)[1].strip()
    fast = next(x for x in lines if x.startswith("utils.decode, greedy:")).split(":", 1)[1].strip()
    assert plain == fast


def test_captions_show_real_learning(executed):
    """Notebook 05's results on the sample's test split: the model trained by notebook 04 must
    caption the shapes far better than it does given other images' features."""
    run_dir = executed["workdir"] / "models" / "sample-inceptionv3"
    evaluation = utils.read_evaluation(run_dir, "test")
    greedy = evaluation.result(utils.DecodingSetting(1, 0.0, 2))
    control = evaluation.result(utils.DecodingSetting(1, 0.0, 2), shuffled_images=True)
    beam = evaluation.result(utils.DEFAULT_DECODING)
    print({result.label: round(result.scores["bleu4"], 3) for result in evaluation.results})
    assert greedy.scores["bleu4"] >= BLEU4_BAR
    assert beam.scores["bleu4"] >= BLEU4_BAR
    assert greedy.scores["bleu4"] >= 2 * control.scores["bleu4"]
    assert greedy.diagnostics["distinct_captions"] == len(set(greedy.captions.values()))


def test_notebook_04_with_no_image_shown_says_so(executed, tmp_path):
    """N_SHOWN = 0 once failed in matplotlib: now it says no image is captioned after each
    epoch, and trains."""
    out = tmp_path / "04.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "04_train_model.ipynb"), str(out), cwd=str(REPO),
        progress_bar=False, parameters={
            "DATA_DIR": str(executed["workdir"] / "data"), "MODELS_DIR": str(tmp_path / "models"),
            **SMALL["04_train_model"], "EPOCHS": 1, "N_SHOWN": 0})
    text = printed(json.loads(out.read_text()))
    assert "N_SHOWN = 0: no validation image is captioned after each epoch" in text
    assert utils.is_trained(tmp_path / "models" / "sample-inceptionv3")


def test_notebook_05_names_a_mistyped_run_and_the_runs_there_are(executed, tmp_path):
    """Not only "run notebook 04 first": the folder, where it was looked for, and the runs
    beside it."""
    models = executed["workdir"] / "models"
    with pytest.raises(papermill.PapermillExecutionError) as failed:
        papermill.execute_notebook(
            str(REPO / "notebooks" / "05_decode_and_evaluate.ipynb"), str(tmp_path / "05.ipynb"),
            cwd=str(REPO), progress_bar=False, parameters={
                "DATA_DIR": str(executed["workdir"] / "data"), "MODELS_DIR": str(models),
                "RUN_DIR": str(models / "sample-inceptionv33")})
    assert failed.value.ename == "FileNotFoundError"
    assert re.match(f"{models / 'sample-inceptionv33'} not found: .*the runs in {models}: "
                    ".*sample-inceptionv3", failed.value.evalue)


def test_notebook_05_decodes_an_ensemble_and_keeps_its_scores_apart(executed, tmp_path):
    """Notebook 05 with ENSEMBLE: the run and a copy of it decode as one Ensemble, which writes
    the run's own captions (two equal members average to one), into an evaluation folder of its
    own, leaving the run's evaluation as it was."""
    run_dir = executed["workdir"] / "models" / "sample-inceptionv3"
    copy = shutil.copytree(run_dir, tmp_path / "models" / "copy",
                           ignore=shutil.ignore_patterns("evaluation-*"))
    before = {p: p.stat().st_mtime_ns for p in run_dir.glob("evaluation-*")}
    out = tmp_path / "05.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "05_decode_and_evaluate.ipynb"), str(out), cwd=str(REPO),
        progress_bar=False, parameters={
            "DATA_DIR": str(executed["workdir"] / "data"), "MODELS_DIR": str(tmp_path / "models"),
            "RUN_DIR": str(run_dir), "ENSEMBLE": [str(copy)], "BEAM_WIDTHS": [3]})
    text = printed(json.loads(out.read_text()))
    assert f"ensemble of {run_dir} + {copy}:" in text and "no attention maps" in text
    ensemble = utils.read_evaluation(utils.evaluation_folder(tmp_path / "models",
                                                             [run_dir, copy]), "test")
    greedy = utils.DecodingSetting(1, 0.0, 2)
    assert ensemble.result(greedy).captions == utils.read_evaluation(
        run_dir, "test").result(greedy).captions
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("evaluation-*")} == before


def test_own_photo_is_captioned_like_its_cached_features(executed, tmp_path):
    """A photo given by path goes through the run's encoder with the cache's preprocessing: its
    caption is the one notebook 05 wrote from the cached features. A broken file is reported."""
    workdir = executed["workdir"]
    captioner = utils.Captioner.from_run(workdir / "models" / "sample-inceptionv3")
    evaluation = utils.read_evaluation(workdir / "models" / "sample-inceptionv3", "test")
    beam = evaluation.result(utils.DEFAULT_DECODING)
    prepared = utils.PreparedDataset.load(utils.dataset_paths("sample", workdir / "data")["captions"])
    names = list(beam.captions)[:3]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    files = [Path(prepared.images_dir) / n for n in names] + [broken]
    own, unreadable = utils.caption_image_files(captioner, files, utils.DEFAULT_DECODING)
    assert [own[str(f)].text for f in files[:3]] == [beam.captions[n] for n in names]
    assert list(unreadable) == [str(broken)] and str(broken) not in own
    assert unreadable[str(broken)].startswith(f"{broken}: cannot read as an image")


@pytest.mark.parametrize("notebook, first", [
    ("02_extract_features", "01_prepare_captions"), ("03_glove_embeddings", "01_prepare_captions"),
    ("04_train_model", "01_prepare_captions"), ("05_decode_and_evaluate", "04_train_model")])
def test_a_notebook_without_its_input_says_which_to_run_first(notebook, first, tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(
            str(REPO / "notebooks" / f"{notebook}.ipynb"), str(tmp_path / "out.ipynb"),
            parameters={"DATA_DIR": str(tmp_path / "data"), "MODELS_DIR": str(tmp_path / "models")},
            cwd=str(REPO), progress_bar=False)
    assert error.value.ename == "FileNotFoundError"
    assert f"not found: run notebooks/{first}.ipynb first" in error.value.evalue


def test_notebook_02_extracts_in_shards_and_joins_them(executed, tmp_path):
    """Two shards (as two GPUs or machines would run them), then the join: the shard runs show
    no pictures and say what is left; the join makes the whole cache and shows it."""
    data = shutil.copytree(executed["workdir"] / "data", tmp_path / "data")

    def run(shard):
        out = tmp_path / f"02-{shard}.ipynb"
        papermill.execute_notebook(
            str(REPO / "notebooks" / "02_extract_features.ipynb"), str(out),
            parameters={"DATA_DIR": str(data), "INPUT_SIZE": 75, "CHUNK_SIZE": 128,
                        "SHARD": shard}, cwd=str(REPO), progress_bar=False)
        return json.loads(out.read_text())

    first = run([1, 2])
    assert "shard 1 of 2 (0-based): its 2 chunk(s) done; 2 chunk(s) of other shards to go" \
        in printed(first)
    second = run([0, 2])
    assert "every shard is done: join them (SHARD = None)" in printed(second)
    for shard_run in (first, second):
        assert not any("image/png" in o.get("data", {}) for o in outputs(shard_run))
    joined = run(None)
    assert "400 images in" in printed(joined)
    assert sum("image/png" in o.get("data", {}) for o in outputs(joined)) == 2
    cache = utils.cache_dir(data / "sample" / "features", utils.Encoder("inceptionv3", None, 75))
    assert utils.load_features(cache)[0] == sorted(utils.PreparedDataset.load(
        data / "sample" / "prepared" / "captions.json").images)


def test_notebook_04_trains_a_student_of_the_run_it_trained(executed, tmp_path):
    """TEACHERS = [the run the pipeline trained], at both levels: the notebook says what the
    teachers gave, shows the distillation loss, and the student's record names its teacher by
    its weights' digest; the student then joins its teacher in an ensemble like any run."""
    teacher = executed["workdir"] / "models" / "sample-inceptionv3"
    out = tmp_path / "04.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "04_train_model.ipynb"), str(out), cwd=str(REPO),
        progress_bar=False, parameters={
            "DATA_DIR": str(executed["workdir"] / "data"), "MODELS_DIR": str(tmp_path / "models"),
            "RUN_NAME": "student", "EPOCHS": 2, "TEACHERS": [str(teacher)],
            "DISTILLATION_WEIGHT": 0.5, "TEACHER_CAPTIONS": True})
    text = printed(json.loads(out.read_text()))
    assert f"1 teacher(s), decoding as one: {teacher}" in text
    assert "the teachers' captions of 300 training photos join their references" in text
    assert "towards_teachers" in text  # utils.DistillationLoss.call, shown
    student = tmp_path / "models" / "student"
    assert utils.read_run(student)[1].training.teachers == (utils.weights_digest(teacher),)
    assert isinstance(utils.load_decoder([student, teacher])[0], utils.Ensemble)


def test_the_attention_model_runs_through_the_notebooks_and_shows_where_it_looked(executed,
                                                                                 tmp_path):
    """Notebooks 02, 04 and 05 again with ATTENTION's settings, from the captions, vocabulary and
    embedding that notebooks 01 and 03 wrote: grids of 3x3 positions, a model that learns from
    them, a self-critical phase after it (each epoch's line, its curves beside the loss's), and
    notebook 05's attention maps for the split's first images and for your own photo."""
    workdir = executed["workdir"]
    data = shutil.copytree(workdir / "data", tmp_path / "data",
                           ignore=shutil.ignore_patterns("features"))  # grids only, as asked
    own_photo = {"05_decode_and_evaluate": {"IMAGE": str(workdir / OWN_PHOTO)}}
    runs = {}
    for stem, parameters in ATTENTION.items():
        out = tmp_path / f"{stem}.ipynb"
        papermill.execute_notebook(
            str(REPO / "notebooks" / f"{stem}.ipynb"), str(out), cwd=str(REPO), progress_bar=False,
            parameters={"DATA_DIR": str(data), "MODELS_DIR": str(tmp_path / "models"),
                        **parameters, **own_photo.get(stem, {})})
        runs[stem] = json.loads(out.read_text())
        assert not [o for o in outputs(runs[stem]) if o["output_type"] == "error"], stem
    assert "grids: 9 positions of 2048 values an image" in printed(runs["02_extract_features"])
    assert "at each of 9 positions" in printed(runs["04_train_model"])
    phase = [line for line in printed(runs["04_train_model"]).splitlines()
             if line.startswith("self-critical epoch ")]
    assert len(phase) == 2 and all("dev CIDEr-D" in line for line in phase)
    assert "of the second phase (0: the cross-entropy model)" in printed(runs["04_train_model"])
    # What the phase optimises, shown before it runs: the advantage and the REINFORCE step.
    assert "def advantages(" in printed(runs["04_train_model"])
    assert "def reinforce_step(" in printed(runs["04_train_model"])
    curves = next(c for c in runs["04_train_model"]["cells"]
                  if "self-critical phase: CIDEr-D" in "".join(c["source"]))
    assert any("image/png" in o.get("data", {}) for o in curves["outputs"])
    pictures = [o for o in outputs(runs["05_decode_and_evaluate"])
                if "image/png" in o.get("data", {})]
    # the scores, the first, best and worst captioned, your own photo; then the maps of the first
    # N_EXAMPLES (3) images of the split and of your own photo
    assert len(pictures) == 5 + 3 + 1
    evaluation = utils.read_evaluation(tmp_path / "models" / "sample-inceptionv3", "test")
    greedy = evaluation.result(utils.DecodingSetting(1, 0.0, 2))
    control = evaluation.result(utils.DecodingSetting(1, 0.0, 2), shuffled_images=True)
    print({result.label: round(result.scores["bleu4"], 3) for result in evaluation.results})
    assert greedy.scores["bleu4"] >= 1.5 * control.scores["bleu4"]


RUNNABLE = '''{"cells": [
 {"cell_type": "code", "execution_count": null, "metadata": {"tags": ["parameters"]},
  "outputs": [], "source": ["DATASET = None"]},
 {"cell_type": "code", "execution_count": null, "metadata": {}, "outputs": [],
  "source": ["print('made for', DATASET)\\n", "%s"]}],
 "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
 "nbformat": 4, "nbformat_minor": 5}'''


def test_make_run_keeps_each_dataset_apart_and_a_failure_never_replaces_a_good_notebook(tmp_path):
    """notebooks/run.py, which `make run` runs: executed notebooks in outputs/<DATASET>/; a
    notebook that fails is kept apart, its one-line reason printed, the good copy untouched."""
    notebooks, out = tmp_path / "notebooks", tmp_path / "outputs"
    notebooks.mkdir()
    (notebooks / "01_first.ipynb").write_text(RUNNABLE % "pass")
    (notebooks / "02_second.ipynb").write_text(RUNNABLE % "pass")

    def run(dataset):
        return subprocess.run([sys.executable, str(REPO / "notebooks" / "run.py"), "--dataset",
                               dataset, "--notebooks", str(notebooks), "--output", str(out)],
                              capture_output=True, text=True)

    first = run("sample")
    assert first.returncode == 0
    for noise in ("TCP without encryption", "KeyboardInterrupt", "[IPKernelApp]"):
        assert noise not in first.stdout + first.stderr, first.stderr[-2000:]
    good = (out / "sample" / "02_second.ipynb").read_text()
    assert "made for sample" in good and (out / "sample" / "02_second.html").is_file()
    failing = "raise FileNotFoundError('data/flickr8k: put the two zips there first')"
    (notebooks / "02_second.ipynb").write_text(RUNNABLE % failing)
    done = run("flickr8k")
    assert done.returncode == 1
    assert ("02_second stopped: FileNotFoundError: data/flickr8k: put the two zips there first\n"
            f"the executed notebook, with the whole error: {out / 'flickr8k' / 'failed'}"
            ) in done.stdout
    assert "Traceback" not in done.stdout
    assert "made for flickr8k" in (out / "flickr8k" / "01_first.ipynb").read_text()
    assert "FileNotFoundError" in (out / "flickr8k" / "failed" / "02_second.ipynb").read_text()
    assert not (out / "flickr8k" / "02_second.ipynb").exists()
    assert (out / "sample" / "02_second.ipynb").read_text() == good  # another dataset's: kept
    assert run("sample").returncode == 1
    assert (out / "sample" / "02_second.ipynb").read_text() == good  # a failure replaces nothing
    assert [p.name for p in (out / "sample").iterdir() if p.name.startswith(".")] == []
