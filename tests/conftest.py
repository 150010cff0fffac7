import http.server
import io
import os
import threading
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "flickr8k"
SHIPPED_RUN = REPO / "models" / "flickr8k-pretrained"  # the trained run this repository ships


@pytest.fixture(scope="session")
def shared_flickr8k():
    """The real Flickr8k files beside the checkout (../shared/flickr8k). CI always has them and
    fails without them; elsewhere the tests that need them are skipped, saying why."""
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED} is missing: CI's real-data tests need ../shared/flickr8k")
        pytest.skip(f"{SHARED} is not here: real-data tests need Flickr8k files beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory):
    import utils
    return utils.make_sample_dataset(tmp_path_factory.mktemp("data") / "sample")


@pytest.fixture(scope="session")
def sample_training(sample_root, tmp_path_factory):
    """The sample dataset prepared and encoded (random InceptionV3 at 75x75), ready to train."""
    import numpy as np

    import utils

    images_dir, captions_file, split_files = utils.find_dataset_files(sample_root)
    prepared, _ = utils.prepare_dataset(captions_file, images_dir, split_files)
    vocab = utils.build_vocabulary(utils.split_captions(prepared, "train"))
    cache = tmp_path_factory.mktemp("features")
    utils.extract_features(images_dir, sorted(prepared.images), cache,
                           utils.Encoder("inceptionv3", None, 75))
    names, features = utils.load_features(cache)
    return prepared, vocab, names, np.asarray(features, "float32")


# The attention model's tests read InceptionV3's grid at 139x139: 3x3 positions, the smallest
# input with more than one (at 75x75, the smallest it takes, the grid is 1x1).
GRID_INPUT_SIZE = 139


def model_kinds():
    """Every model the tests build: each architecture, and each that reads a grid only when given
    one (the Transformer) once more on a grid: "transformer" reads pooled vectors,
    "transformer-grid" a grid of positions."""
    import utils

    return [*utils.ARCHITECTURES, *(f"{name}-grid" for name, cls in utils.ARCHITECTURES.items()
                                    if cls.can_read_grid and not cls.reads_grid)]


def split_kind(kind):
    """A kind of model_kinds() as (its architecture, whether it reads a grid)."""
    import utils

    architecture = kind.removesuffix("-grid")
    return architecture, kind != architecture or utils.architecture_class(architecture).reads_grid


@pytest.fixture(scope="session")
def sample_grid_training(sample_training, sample_root, tmp_path_factory):
    """As sample_training, but the features are grids [images, 9, 2048] (random InceptionV3 at
    GRID_INPUT_SIZE), read from a cache extracted with `grid=True`."""
    import numpy as np

    import utils

    prepared, vocab, _, _ = sample_training
    cache = tmp_path_factory.mktemp("grids")
    utils.extract_features(utils.find_dataset_files(sample_root)[0], sorted(prepared.images),
                           cache, utils.Encoder("inceptionv3", None, GRID_INPUT_SIZE), grid=True)
    names, grids = utils.load_features(cache, grid=True)
    return prepared, vocab, names, np.asarray(grids, "float32")


def sample_source(features):
    """What made sample_training's features (or, for a grid, sample_grid_training's), as a run's
    record keeps it."""
    import utils

    return utils.FeatureSource("cache", "sample features", features.shape[-1], "inceptionv3",
                               "random", GRID_INPUT_SIZE if features.ndim == 3 else 75)


def sample_run_config(sample_training, data, seed=0, units=64, epochs=8, architecture="merge",
                      **training):
    """The record of a small run on the sample (`data`: its CaptionData), as train_sample_run
    trains it; `training`: more TrainingConfig fields (a student's teachers)."""
    import utils

    _, vocab, _, features = sample_training
    return utils.RunConfig(
        dataset="sample", vocabulary=vocab.fingerprint, embedding={}, data=data.counts(),
        features=sample_source(features),
        model=utils.ModelConfig(len(vocab), features.shape[-1], architecture, units=units,
                                dropout=0.2, train_embedding=False,
                                positions=features.shape[1] if features.ndim == 3 else None),
        training=utils.TrainingConfig(epochs=epochs, patience=epochs, seed=seed,
                                      learning_rate=3e-3, label_smoothing=0.0, **training))


def train_sample_run(run_dir, sample_training, seed=0, units=64, epochs=8, architecture="merge"):
    """A small real run on the sample's shapes (random InceptionV3 at 75x75, or for attention at
    GRID_INPUT_SIZE with sample_grid_training's grids, so a photo can be encoded again), saved as
    notebook 04 saves one: record, vocabulary, best model, history."""
    import utils

    prepared, vocab, names, features = sample_training
    data = utils.CaptionData.encode(prepared, vocab, names, features)
    config = sample_run_config(sample_training, data, seed, units, epochs,
                               split_kind(architecture)[0])
    model = utils.build_model(config.model, config.training,
                              feature_stats=data.feature_statistics())
    utils.save_run(run_dir, config, vocab)
    utils.train_caption_model(model, data, run_dir, config.training, verbose=0)
    return run_dir


def stop_after(epochs):
    """A Keras callback that interrupts training like a kernel restart at the end of the
    `epochs`-th epoch it sees begin, after the checkpoints; its `started` counts the epochs begun.
    (Made here, not at import: conftest does not load Keras for tests that need none.)"""
    import keras

    class Stop(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.started = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.started += 1

        def on_epoch_end(self, epoch, logs=None):
            if self.started == epochs:
                raise KeyboardInterrupt("simulated interruption")

    return Stop()


# Runs on the shared photos' ImageNet features, each with the network(s) that made them named, so
# that it encodes a new photo: (features files, side by side when several; encoder).
SHARED_RUN_FEATURES = {
    "lite0": (["efficientnet_lite0_imagenet.npz"], "efficientnet_lite0"),
    "lite2": (["efficientnet_lite2_imagenet_squash.npz"], "efficientnet_lite2"),
    "both": (["efficientnet_lite0_imagenet.npz", "efficientnet_lite2_imagenet_squash.npz"],
             "efficientnet_lite0+efficientnet_lite2")}


@pytest.fixture(scope="session")
def shared_runs(shared_flickr8k, tmp_path_factory):
    """A small merge run on each of SHARED_RUN_FEATURES (the shared subset's official train
    photos, two epochs; "both" on Lite0's and Lite2's features side by side, written to one
    .npz), saved as notebook 04 saves one, and their captions prepared as notebook 01 prepares
    them: {"lite0": its folder, "lite2": ..., "both": ..., "data": the DATA_DIR}."""
    import warnings

    import utils

    images_dir, captions_file, split_files = utils.find_dataset_files(shared_flickr8k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the token file names 8,090 images, not all here
        prepared, _ = utils.prepare_dataset(captions_file, images_dir, split_files)
    vocab = utils.build_vocabulary(utils.split_captions(prepared, "train"))
    root = tmp_path_factory.mktemp("shared-runs")
    runs = {"data": root / "data"}
    prepared.save(utils.dataset_paths("shared8k", runs["data"])["captions"])
    for key, (files, encoder) in SHARED_RUN_FEATURES.items():
        paths = [shared_flickr8k / "features" / file for file in files]
        path = paths[0] if len(paths) == 1 else utils.save_side_by_side(paths, root / f"{key}.npz")
        names, features = utils.load_features(path)
        data = utils.CaptionData.encode(prepared, vocab, names, features)
        config = utils.RunConfig(
            dataset="shared8k", vocabulary=vocab.fingerprint, embedding={}, data=data.counts(),
            features=utils.feature_source(path, encoder),
            model=utils.ModelConfig(len(vocab), features.shape[1], units=128),
            training=utils.TrainingConfig(epochs=2, patience=2))
        model = utils.build_model(config.model, config.training,
                                  feature_stats=data.feature_statistics())
        runs[key] = root / f"shared8k-{key}"
        utils.save_run(runs[key], config, vocab)
        utils.train_caption_model(model, data, runs[key], config.training, verbose=0)
    return runs


def is_a_caption(shown, vocab):
    """Whether `shown` is a caption as printed: the vocabulary's words, or EMPTY_CAPTION. All a
    test may ask of what a model trained in it writes."""
    import utils

    return shown == utils.EMPTY_CAPTION or set(shown.split()) <= set(vocab.words)


class Server:
    """Serves `files` (name -> bytes, or a function answering the request itself); `cut_after`
    bytes makes the next response stop short."""

    def __init__(self, files):
        self.files, self.requests, self.cut_after = files, [], None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = server.files.get(self.path.lstrip("/"))
                server.requests.append((self.path, self.headers.get("Range")))
                if body is None:
                    self.send_error(404)
                    return
                if callable(body):  # a handler of its own: redirects, endless or slow bodies
                    body(self)
                    return
                start = int(self.headers["Range"][6:].rstrip("-")) if self.headers["Range"] else 0
                if start >= len(body) and start:  # as real servers answer a Range past the end
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                sent = body[start:]
                if server.cut_after is not None:
                    sent, server.cut_after = sent[:server.cut_after], None
                self.wfile.write(sent)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server({})
    yield s
    s.close()


def make_zip(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def scored_result(setting, scores, shuffled_images=False):
    """A DecodingResult with these scores and nothing else, as the app's sidebar reads it."""
    import utils

    return utils.DecodingResult(setting, shuffled_images, scores, {}, {}, {}, {})
