"""The notebooks on real Flickr8k files: the full-dataset path (`DATASET = "flickr8k"`, downloaded
from a mirror on loopback) and evaluation on an external features file and a split file of names."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import papermill
import pytest
from test_datasets import (
    layout_extracted,
    layout_kaggle,
    layout_kaggle_zip,
    layout_original_zips,
    shared_subset,
)

import utils
from conftest import REPO, SHIPPED_RUN, is_a_caption, make_zip

NOTEBOOKS = {p.stem[:2]: p for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")}


def run_notebook(number, out_dir, **parameters):
    """Execute one notebook with papermill; fail with the cell's error if it raised."""
    out = Path(out_dir) / NOTEBOOKS[number].name
    papermill.execute_notebook(str(NOTEBOOKS[number]), str(out), parameters=parameters,
                               cwd=str(REPO), progress_bar=False)
    return out


def flickr8k_mirror(shared, n_train=16, n_val=4, n_test=6):
    """Flickr8k's two zips as the GitHub release ships them, holding real images and captions of
    the shared subset, with split files that give some of those images to dev and test."""
    names = utils.read_split_file(shared / "Flickr_8k.trainImages.txt")
    names = [n for n in names if (shared / "Images" / n).is_file()][:n_train + n_val + n_test]
    splits = {"train": names[:n_train], "dev": names[n_train:n_train + n_val],
              "test": names[n_train + n_val:]}
    tokens = (shared / "Flickr8k.token.txt").read_text()
    text = {"Flickr8k.token.txt": "".join(line + "\n" for line in tokens.splitlines()
                                          if line.split("#")[0] in names),
            **{f"Flickr_8k.{s}Images.txt": "\n".join(n) + "\n" for s, n in splits.items()}}
    images = {f"Flicker8k_Dataset/{n}": (shared / "Images" / n).read_bytes() for n in names}
    return {"Flickr8k_Dataset.zip": make_zip(images), "Flickr8k_text.zip": make_zip(text)}, splits


def test_flickr8k_is_one_parameter_away(shared_flickr8k, server, tmp_path):
    """DATASET="flickr8k": download, InceptionV3 features, GloVe, training and evaluation on the
    official test split, in five notebooks. Two settings differ from a user's run, both for want of
    internet here: the mirror's address, and InceptionV3 weights from a file (Keras cannot fetch
    the ImageNet ones), which is how an offline user gives them too."""
    server.files, splits = flickr8k_mirror(shared_flickr8k)
    weights = tmp_path / "inception_v3_notop.weights.h5"
    utils.Encoder("inceptionv3", None).build().save_weights(weights)
    common = {"DATASET": "flickr8k", "DATA_DIR": str(tmp_path / "data")}
    run_notebook("01", tmp_path, **common, FLICKR8K_URL=server.url)
    extracted = run_notebook("02", tmp_path, **common, WEIGHTS=str(weights), BATCH_SIZE=8)
    assert re.search(r"NO GPU: 26 images at about [\d.]+ images/s on this CPU .* take about \d+ "
                     r"minutes", extracted.read_text()), "the CPU's estimate, on a real dataset"
    run_notebook("03", tmp_path, **common)
    run_notebook("04", tmp_path, **common, EPOCHS=2, MODELS_DIR=str(tmp_path / "models"))
    run_notebook("05", tmp_path, **common, MODELS_DIR=str(tmp_path / "models"))

    assert {path for path, _ in server.requests} == {"/Flickr8k_Dataset.zip", "/Flickr8k_text.zip"}
    run_dir = tmp_path / "models" / "flickr8k-inceptionv3"
    _, vocab, config = utils.load_run(run_dir)
    # The encoder's record comes from notebook 02's cache, not from notebook 04's parameters.
    assert config.features == utils.FeatureSource(
        "cache", config.features.path, 2048, "inceptionv3", utils.weights_tag(weights), 299,
        utils.features_fingerprint(config.features.path))
    assert config.data.train.images == len(splits["train"])
    assert config.model.vocab_size == len(vocab) and config.vocabulary == vocab.fingerprint
    evaluation = utils.read_evaluation(run_dir, "test")
    assert evaluation.images == len(splits["test"])
    assert_scores_are_those_of_the_captions(evaluation, tmp_path / "data" / "flickr8k")


def assert_scores_are_those_of_the_captions(evaluation, dataset_root):
    """Every decoding's scores are the scores of the captions it saved (recomputed here), for
    every image asked for. (A model trained for two epochs on 16 photos may say <end> first for
    some images: an empty caption is scored as such.)"""
    prepared = utils.PreparedDataset.load(dataset_root / "prepared" / "captions.json")
    for entry in evaluation.results:
        names = list(entry.captions)
        assert len(names) == evaluation.images
        hypotheses = [entry.captions[n] for n in names]
        assert any(hypotheses)
        recomputed, _ = utils.caption_scores(prepared.raw_references(names), hypotheses,
                                             meteor=False)
        for metric in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider_d", "nltk_bleu4"):
            assert entry.scores[metric] == pytest.approx(recomputed[metric])
        assert entry.scores["bleu1"] > 0  # "a", at least, matches


def test_evaluation_on_external_features_and_a_split_file(shared_flickr8k, tmp_path):
    """A user's own features (.npz of names and features) and their own list of images, from the
    command line: papermill's CLI runs notebooks 04 and 05 on them, as docs/datasets.md says.
    The run is named after the features' file in both notebooks, and notebook 05 says in one
    sentence why it cannot caption a new photo."""
    features = shared_flickr8k / "features" / "efficientnet_lite0_imagenet.npz"
    names_file = tmp_path / "my_images.txt"
    dev = utils.read_split_file(shared_flickr8k / "Flickr_8k.devImages.txt")
    chosen = [n for n in dev if (shared_flickr8k / "Images" / n).is_file()][:40]
    names_file.write_text("\n".join(chosen) + "\n")
    data, models = str(tmp_path / "data"), str(tmp_path / "models")
    splits = {"train": str(shared_flickr8k / "Flickr_8k.trainImages.txt"),
              "val": str(shared_flickr8k / "Flickr_8k.devImages.txt")}
    common = ["-p", "DATASET", "shared8k", "-p", "DATA_DIR", data]
    steps = [
        ("01", common + ["-p", "IMAGES_DIR", str(shared_flickr8k / "Images"),
                         "-p", "CAPTIONS_FILE", str(shared_flickr8k / "Flickr8k.token.txt"),
                         "-y", json.dumps({"SPLIT_FILES": splits}), "-p", "MIN_COUNT", "5"]),
        ("03", common),
        ("04", common + ["-p", "FEATURES", str(features), "-p", "EPOCHS", "2",
                         "-p", "MODELS_DIR", models]),
        ("05", common + ["-p", "MODELS_DIR", models, "-p", "FEATURES", str(features),
                         "-p", "SPLIT", str(names_file),
                         "-p", "IMAGE", str(shared_flickr8k / "Images" / chosen[0])]),
    ]
    for number, args in steps:
        out = tmp_path / NOTEBOOKS[number].name
        done = subprocess.run([sys.executable, "-m", "papermill", str(NOTEBOOKS[number]), str(out),
                               "--cwd", str(REPO), *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]

    run_dir = tmp_path / "models" / "shared8k-efficientnet_lite0_imagenet"
    _, _, config = utils.load_run(run_dir)
    assert config.features == utils.FeatureSource("external", utils.portable_path(features), 1280,
                                                  fingerprint=utils.features_fingerprint(features))
    assert config.features.path == utils.portable_path(features)
    executed = json.loads((tmp_path / NOTEBOOKS["05"].name).read_text())
    printed = "".join("".join(o.get("text", "")) for c in executed["cells"]
                      for o in c.get("outputs", []))
    assert utils.why_no_encoder(config.features) in printed
    assert "efficientnet_lite0_imagenet.npz), so it cannot encode a new photo" in printed
    evaluation = utils.read_evaluation(run_dir, names_file)
    assert evaluation.images == len(chosen) == 40
    assert all(list(entry.captions) == chosen for entry in evaluation.results)
    assert_scores_are_those_of_the_captions(evaluation, tmp_path / "data" / "shared8k")


# A photo of the shared folder, captioned as "your own" by a features-only run.
OWN_PHOTO = "1000268201_693b08cb0e.jpg"


def test_a_features_only_dataset_runs_every_notebook(shared_flickr8k, tmp_path):
    """Flickr8k's captions and the shared subset's features, no photo: the features' names stand
    for the images present, notebooks 01 to 05 run, notebook 05 evaluates the dev split, and
    what needs pixels says in one line why it is skipped; with the features' network named, a
    photo of your own is captioned."""
    features = shared_flickr8k / "features" / "efficientnet_lite0_imagenet.npz"
    common = {"DATASET": "features8k", "DATA_DIR": str(tmp_path / "data"),
              "MODELS_DIR": str(tmp_path / "models")}
    splits = {"train": str(shared_flickr8k / "Flickr_8k.trainImages.txt"),
              "val": str(shared_flickr8k / "Flickr_8k.devImages.txt")}
    given = {"01": {"CAPTIONS_FILE": str(shared_flickr8k / "Flickr8k.token.txt"),
                    "SPLIT_FILES": splits, "FEATURES": str(features)},
             "04": {"FEATURES": str(features), "EPOCHS": 2,
                    "FEATURES_ENCODER": "efficientnet_lite0"},
             "05": {"FEATURES": str(features), "SPLIT": "val", "BEAM_WIDTHS": [3],
                    "IMAGE": str(shared_flickr8k / "Images" / OWN_PHOTO)}}
    printed = {}
    for number in ("01", "02", "03", "04", "05"):
        parameters = {k: v for k, v in common.items() if k in papermill.inspect_notebook(
            str(NOTEBOOKS[number]))} | given.get(number, {})
        executed = json.loads(run_notebook(number, tmp_path, **parameters).read_text())
        printed[number] = "".join("".join(o.get("text", "")) for c in executed["cells"]
                                  for o in c.get("outputs", []))
    prepared = utils.PreparedDataset.load(tmp_path / "data" / "features8k" / "prepared" /
                                          "captions.json")
    with_features = set(utils.load_features(features)[0])
    assert prepared.images_dir is None and set(prepared.images) <= with_features
    dev = [n for n in utils.read_split_file(splits["val"]) if n in with_features]
    assert prepared.names("val") == sorted(dev) and len(dev) > 100
    for number in ("01", "04", "05"):
        assert utils.NO_PHOTOS in printed[number], number
    # The features' network named (FEATURES_ENCODER): your own photo is encoded alike, captioned.
    own = next(line for line in printed["05"].splitlines() if OWN_PHOTO in line)
    vocab = utils.Vocabulary.load(tmp_path / "models" / "features8k-efficientnet_lite0_imagenet" /
                                  "vocabulary.json")
    assert is_a_caption(own.split(": ", 1)[1], vocab), own
    assert "Nothing to extract: this dataset's images are not on this machine" in printed["02"]
    evaluation = utils.read_evaluation(tmp_path / "models" / "features8k-efficientnet_lite0_imagenet",
                                       "val")
    assert evaluation.images == len(dev)
    assert_scores_are_those_of_the_captions(evaluation, tmp_path / "data" / "features8k")


def test_notebook_05_gives_back_the_shipped_runs_dev_scores(shared_flickr8k, tmp_path):
    """The run this repository ships (models/flickr8k-pretrained), evaluated again on the 1,000
    dev photos of the whole-split features file, as its README says: notebook 01 on the features
    alone, then notebook 05. Every decoding's recorded scores come back to 3 decimals."""
    run_dir = tmp_path / "models" / SHIPPED_RUN.name
    shutil.copytree(SHIPPED_RUN, run_dir, ignore=shutil.ignore_patterns("evaluation-*"))
    features = str(utils.save_side_by_side(  # its README's first command
        [shared_flickr8k / "features" / f"flickr8k_trainval_efficientnet_{encoder}.npz"
         for encoder in ("lite0", "lite2")], tmp_path / "both.npz"))
    common = {"DATASET": "flickr8k_full", "DATA_DIR": str(tmp_path / "data")}
    run_notebook("01", tmp_path, **common, FEATURES=features,
                 CAPTIONS_FILE=str(shared_flickr8k / "Flickr8k.token.txt"),
                 SPLIT_FILES={"train": str(shared_flickr8k / "Flickr_8k.trainImages.txt"),
                              "val": str(shared_flickr8k / "Flickr_8k.devImages.txt")})
    run_notebook("05", tmp_path, **common, FEATURES=features, SPLIT="val", RUN_DIR=str(run_dir))
    recorded, again = (utils.read_evaluation(d, "val") for d in (SHIPPED_RUN, run_dir))
    assert again.images == recorded.images == 1000
    for old, new in zip(recorded.results, again.results, strict=True):
        assert old.label == new.label
        assert {k: round(v, 3) for k, v in old.scores.items() if v is not None} == {
            k: round(v, 3) for k, v in new.scores.items() if v is not None}, old.label


@pytest.mark.parametrize("layout", [layout_original_zips, layout_extracted, layout_kaggle,
                                    layout_kaggle_zip], ids=lambda f: f.__name__[7:])
def test_notebook_01_prepares_flickr8k_from_each_layout(layout, shared_flickr8k, tmp_path):
    """DATASET="flickr8k" and nothing else: each common form of Flickr8k in data/flickr8k/, made
    from the real files, gives the same prepared captions with the official splits."""
    names = shared_subset(shared_flickr8k)
    layout(shared_flickr8k, names, tmp_path / "data" / "flickr8k")
    run_notebook("01", tmp_path, DATASET="flickr8k", DATA_DIR=str(tmp_path / "data"),
                 FLICKR8K_URL="http://127.0.0.1:9/")  # nothing may be downloaded
    prepared = utils.PreparedDataset.load(tmp_path / "data" / "flickr8k" / "prepared" /
                                          "captions.json")
    assert sorted(prepared.images) == names
    official = {s: set(utils.read_split_file(utils.FLICKR8K_SPLITS / f))
                for s, f in utils.SPLIT_FILE_NAMES.items()}
    assert all(n in official[info["split"]] for n, info in prepared.images.items())
    assert all(len(info["references"]) == 5 for info in prepared.images.values())


def test_an_ensemble_across_encoders_in_notebook_05(shared_runs, shared_flickr8k, tmp_path):
    """Runs on Lite0's and on Lite2's features of the same photos, one ensemble in notebook 05:
    each reads its own features file (side by side), the dev photos' captions are the
    Ensemble's of those tables, and a photo of your own is read by both networks."""
    runs = [shared_runs["lite0"], shared_runs["lite2"]]
    photo = shared_flickr8k / "Images" / OWN_PHOTO
    executed = json.loads(run_notebook(
        "05", tmp_path, DATA_DIR=str(shared_runs["data"]), MODELS_DIR=str(tmp_path / "models"),
        RUN_DIR=str(runs[0]), ENSEMBLE=[str(runs[1])], SPLIT="val", BEAM_WIDTHS=[3],
        IMAGE=str(photo)).read_text())
    printed = "".join("".join(o.get("text", "")) for c in executed["cells"]
                      for o in c.get("outputs", []))
    assert "efficientnet_lite0 (imagenet) and efficientnet_lite2 (imagenet) features" in printed
    decoder, _, config = utils.load_decoder(runs)
    names, table = utils.load_feature_tables([source.path for source in decoder.sources])
    evaluation = utils.read_evaluation(utils.evaluation_folder(tmp_path / "models", runs), "val")
    beam = utils.DecodingSetting(3, 1.0, 2)
    written = evaluation.result(beam).captions
    row = {name: i for i, name in enumerate(names)}
    dev = list(written)
    assert len(dev) > 100
    expected = utils.decode(decoder, utils.FeatureRows(table, [row[n] for n in dev]), beam)
    assert [written[n] for n in dev] == [c.text for c in expected]
    captioner = utils.Captioner.from_run(runs)
    assert f"{photo}: {utils.caption_image(captioner, photo, beam).shown}" in printed
