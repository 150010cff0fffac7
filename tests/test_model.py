"""Stage 4: the merge model, its one-pass training, resumable runs, and that it learns."""
from pathlib import Path

import keras
import numpy as np
import pytest

import utils
from conftest import model_kinds, split_kind, stop_after

V, F = 30, 12


def random_captions(n, length, seed=0):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((n, length), "int32")
    for i in range(n):
        k = rng.integers(1, length - 1)
        tokens[i, :k + 2] = [2, *rng.integers(4, V, k), 3]
    return tokens


@pytest.mark.parametrize("architecture", model_kinds())
def test_sequence_model_equals_prefix_expansion(architecture):
    """For the same weights, the next-word probabilities of the seed projects' prefix model and of
    the one-pass sequence model agree for every prefix of every caption, for every architecture:
    the LSTM is causal, wherever the image enters."""
    keras.utils.set_random_seed(0)
    stats = (np.random.default_rng(1).normal(size=F), np.random.default_rng(2).uniform(0.5, 2, F))
    architecture, reads_grid = split_kind(architecture)
    grid = 9 if reads_grid else None  # 3x3 positions
    model = utils.build_caption_model(utils.ModelConfig(V, F, architecture, embedding_dim=8,
                                                        units=16, positions=grid),
                                      np.random.default_rng(3).normal(0, 0.4, (V, 8)), stats)
    length = 9
    prefix = utils.prefix_model(model, length)
    features = np.random.default_rng(4).normal(size=(5, *([grid] if grid else []), F))
    features = features.astype("float32")
    captions = random_captions(5, length + 1)
    sequence_probs = model.predict([features, captions[:, :-1]], verbose=0)
    compared = 0
    for i, caption in enumerate(captions):
        n = int((caption > 0).sum())
        for t in range(1, n):  # prefix caption[:t] predicts caption[t]
            padded = np.zeros((1, length), "int32")
            padded[0, length - t:] = caption[:t]  # pre-padding, as the seed projects do
            probs = prefix.predict([features[i:i + 1], padded], verbose=0)[0]
            np.testing.assert_allclose(probs, sequence_probs[i, t - 1], rtol=1e-4, atol=1e-6)
            compared += 1
    assert compared >= 10


@pytest.mark.parametrize("architecture", model_kinds())
def test_the_loss_keras_reports_is_the_mean_over_real_words(architecture):
    """For every architecture: the probabilities carry no Keras mask, which would make Keras
    average the loss over the real words a second time (init-inject and par-inject once did)."""
    architecture, reads_grid = split_kind(architecture)
    grid = 4 if reads_grid else None
    model = utils.build_model(utils.ModelConfig(V, F, architecture, units=16, positions=grid),
                              utils.TrainingConfig(label_smoothing=0.1))
    features = np.random.default_rng(5).normal(size=(6, *([grid] if grid else []), F))
    captions = random_captions(6, 9, seed=5)
    inputs, targets = captions[:, :-1], captions[:, 1:]
    probs = model.predict([features.astype("float32"), inputs], verbose=0)
    log_probs = np.log(np.clip(probs, 1e-7, 1.0))
    chosen = np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    per_word = -0.9 * chosen - 0.1 * log_probs.mean(-1)
    expected = per_word[targets > 0].mean()
    reported = model.evaluate([features.astype("float32"), inputs], targets, verbose=0)
    assert reported == pytest.approx(expected, rel=1e-4)


def test_caption_dataset_batches():
    tokens = random_captions(10, 8)
    features = np.arange(4 * F, dtype="float32").reshape(4, F)
    rows = np.arange(10, dtype="int32") % 4
    batches = list(utils.caption_dataset(features, rows, tokens, batch_size=4, shuffle=False,
                                         bucket_width=0))
    (image, inputs), targets = batches[0]
    longest = int((tokens[:4] > 0).sum(1).max())
    assert inputs.shape == targets.shape == (4, longest - 1)  # padded to the batch's longest only
    np.testing.assert_array_equal(image.numpy(), features[rows[:4]])
    np.testing.assert_array_equal(inputs.numpy(), tokens[:4, :longest - 1])
    np.testing.assert_array_equal(targets.numpy(), tokens[:4, 1:longest])
    assert sum(len(b[1]) for b in batches) == 10


def test_caption_dataset_buckets_by_length():
    rng = np.random.default_rng(1)
    tokens = np.zeros((200, 30), "int32")
    for i, length in enumerate(rng.integers(4, 31, size=200)):
        tokens[i, :length] = rng.integers(4, V, size=length)
    features = rng.normal(size=(200, F)).astype("float32")
    rows = np.arange(200, dtype="int32")
    seen = []
    for (image, inputs), targets in utils.caption_dataset(features, rows, tokens, batch_size=8,
                                                          bucket_width=4, seed=3):
        captions = np.concatenate([inputs.numpy()[:, :1], targets.numpy()], axis=1)
        lengths = (captions > 0).sum(1)
        assert lengths.max() == captions.shape[1]  # still padded only to the batch's longest
        assert lengths.max() - lengths.min() < 4  # one bucket per batch
        for feature, caption in zip(image.numpy(), captions):  # each pair stays together
            row = int(np.flatnonzero((features == feature).all(1))[0])
            np.testing.assert_array_equal(tokens[row, :captions.shape[1]], caption)
            seen.append(row)
    assert sorted(seen) == list(range(200))  # every caption once per epoch


def mapped(tmp_path, name, array):
    """`array` saved as an .npy and memory-mapped, as the feature cache and encoded captions are."""
    np.save(tmp_path / f"{name}.npy", array)
    return np.load(tmp_path / f"{name}.npy", mmap_mode="r")


def test_memory_mapped_tables_stream_the_same_batches(tmp_path):
    """A float16 cache and captions on disk, read in place batch by batch, give exactly the batches
    of the same tables in memory, epoch after epoch; the pipeline's graph then holds only the files'
    names, so its size does not grow with the tables (serialisable for tf.distribute at any size)."""
    rng = np.random.default_rng(6)
    tokens = np.zeros((300, 14), "int32")
    for i, length in enumerate(rng.integers(3, 15, size=300)):
        tokens[i, :length] = rng.integers(4, V, size=length)
    features = rng.normal(size=(60, F)).astype("float16")
    rows = rng.integers(0, 60, size=300).astype("int32")
    on_disk = [mapped(tmp_path, n, a) for n, a in
               (("features", features), ("rows", rows), ("tokens", tokens))]
    in_memory = list(utils.caption_dataset(features, rows, tokens, 8, seed=4, epochs=(0, 2)))
    streamed = list(utils.caption_dataset(*on_disk, 8, seed=4, epochs=(0, 2)))
    assert len(streamed) == len(in_memory) == 2 * utils.batch_count(tokens, 8)
    for a, b in zip(in_memory, streamed):
        for x, y in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
            np.testing.assert_array_equal(x, y)
    assert streamed[0][0][0].dtype == "float32"  # float16 on disk, float32 into the model
    # The two epochs are two different orders of the same captions.
    first = np.concatenate([b[1].numpy()[:, 0] for b in streamed[:len(streamed) // 2]])
    second = np.concatenate([b[1].numpy()[:, 0] for b in streamed[len(streamed) // 2:]])
    assert sorted(first) == sorted(second) and list(first) != list(second)

    def graph_bytes(*tables):
        return len(utils.caption_dataset(*tables, 8)._as_serialized_graph().numpy())

    big = [mapped(tmp_path, f"big-{n}", np.resize(a, (100 * len(a), *a.shape[1:])))
           for n, a in (("features", features), ("rows", rows), ("tokens", tokens))]
    assert abs(graph_bytes(*big) - graph_bytes(*on_disk)) < 100  # names and sizes differ only
    # The same tables held in memory are constants inside the graph, which grows with them.
    assert graph_bytes(*(np.asarray(a) for a in big)) > 50 * graph_bytes(*big)


# A fresh process (TensorFlow's config is fixed once it starts) that reads batches from a mapped
# table and prints its peak anonymous memory above the start (the file's pages are the page
# cache's) and the warnings it gave; argv: the table, "tensorflow-first" to run TensorFlow
# before utils.pipeline.
READ_MAPPED = """
import sys, threading, time, warnings
def anonymous_kb():
    return next(int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith("RssAnon:"))
peak = [0]
def sample():
    while True:
        peak[0] = max(peak[0], anonymous_kb())
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
import numpy as np
if sys.argv[2] == "tensorflow-first":
    import tensorflow as tf
    tf.constant(1) + 1
import utils.pipeline
table = np.load(sys.argv[1], mmap_mode="r")
rows = np.arange(len(table), dtype="int32")
tokens = np.full((len(table), 6), 4, "int32")
time.sleep(0.1)
start = peak[0]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for batch in utils.pipeline.caption_dataset(table, rows, tokens, 64).take(20):
        pass
time.sleep(0.1)
print((peak[0] - start) // 1024, len([w for w in caught if "copied into memory" in str(w.message)]))
"""


def test_a_mapped_table_is_never_copied_whole(tmp_path):
    """Reading batches of a 512 MB mapped feature table costs the process far less than the table
    (the classic constant folding that would copy it once is off); where TensorFlow has started
    before utils.pipeline could turn it off, reading a mapped table says it will be copied."""
    import subprocess
    import sys
    table = np.lib.format.open_memmap(tmp_path / "features.npy", "w+", "float16", (131072, 2048))
    table[:] = 1
    table.flush()
    del table

    def read(order):
        done = subprocess.run([sys.executable, "-c", READ_MAPPED, str(tmp_path / "features.npy"),
                               order], capture_output=True, text=True, timeout=300,
                              cwd=Path(__file__).parents[1], check=True)
        grown_mb, warned = map(int, done.stdout.split())
        return grown_mb, warned

    grown_mb, warned = read("utils-first")
    assert grown_mb < 128 and warned == 0, grown_mb  # the table: 512 MB
    assert read("tensorflow-first")[1] == 1


def test_grids_of_positions_stream_too(tmp_path):
    """A table of grids (images x positions x values, as an attention model reads) streams as a
    table of vectors does: each batch gets its images' whole grids."""
    grids = np.random.default_rng(9).normal(size=(20, 9, 4)).astype("float16")  # 3x3 positions
    rows = np.arange(40, dtype="int32") % 20
    tokens = random_captions(40, 8)
    for (image, _), _ in utils.caption_dataset(mapped(tmp_path, "grids", grids), rows, tokens, 8,
                                               shuffle=False, bucket_width=0):
        assert image.shape[1:] == (9, 4)
        np.testing.assert_array_equal(image.numpy(), grids[rows[:8]].astype("float32"))
        break


def test_feature_statistics_read_in_chunks_equal_those_read_whole(tmp_path):
    features = np.random.default_rng(7).normal(size=(90, 5)).astype("float16")
    rows = np.random.default_rng(8).integers(0, 90, size=200)
    whole = utils.feature_statistics(features, rows, chunk=1000)
    chunked = utils.feature_statistics(mapped(tmp_path, "f", features), rows, chunk=7)
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    unique = features[np.unique(rows)].astype("float64")
    np.testing.assert_allclose(whole[1], unique.var(0), rtol=1e-10)


def test_feature_rows_read_a_split_batch_by_batch(tmp_path):
    table = mapped(tmp_path, "f", np.arange(40, dtype="float16").reshape(10, 4))
    split = utils.FeatureRows(table, [7, 2, 5])
    assert len(split) == 3
    np.testing.assert_array_equal(split[:2], np.asarray(table, "float32")[[7, 2]])
    assert split[:2].dtype == "float32"
    reordered = split[np.array([2, 0, 1])]
    np.testing.assert_array_equal(reordered[0:3], np.asarray(table, "float32")[[5, 7, 2]])


@pytest.mark.parametrize("batch_size, bucket_width", [(8, 4), (7, 3), (16, 0), (200, 4)])
def test_an_epoch_has_the_announced_number_of_batches(batch_size, bucket_width):
    rng = np.random.default_rng(2)
    tokens = np.zeros((150, 24), "int32")
    for i, length in enumerate(rng.integers(3, 25, size=150)):
        tokens[i, :length] = rng.integers(4, V, size=length)
    data = utils.caption_dataset(np.zeros((150, F), "float32"), np.arange(150, dtype="int32"),
                                 tokens, batch_size, seed=5, bucket_width=bucket_width)
    assert int(data.cardinality()) == utils.batch_count(tokens, batch_size, bucket_width)
    assert len(list(data)) == len(list(data)) == int(data.cardinality())  # two epochs alike


def test_loss_ignores_padding():
    keras.utils.set_random_seed(0)
    model = utils.build_model(utils.ModelConfig(V, F, units=8),
                              utils.TrainingConfig(label_smoothing=0.0))
    features = np.ones((1, F), "float32")
    short = np.array([[2, 5, 3]], "int32")
    padded = np.array([[2, 5, 3, 0, 0]], "int32")
    loss_short = model.evaluate([features, short[:, :-1]], short[:, 1:], verbose=0)
    loss_padded = model.evaluate([features, padded[:, :-1]], padded[:, 1:], verbose=0)
    assert loss_short == pytest.approx(loss_padded, rel=1e-5)


def test_label_smoothing_loss_matches_keras(tmp_path):
    """Smoothing 0 is Keras's sparse loss with padding ignored; smoothing 0.1 is Keras's one-hot
    CategoricalCrossentropy(label_smoothing=0.1) over the real tokens; a model compiled with it
    saves and loads."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    targets = rng.integers(1, 7, size=(3, 5)).astype("int32")
    targets[0, 3:], targets[2, 1:] = 0, 0
    real = targets > 0
    sparse = keras.losses.SparseCategoricalCrossentropy(ignore_class=0)(targets, probs)
    assert float(utils.SmoothedCaptionLoss(0.0)(targets, probs)) == pytest.approx(float(sparse), rel=1e-5)
    one_hot = keras.losses.CategoricalCrossentropy(label_smoothing=0.1, reduction=None)(
        np.eye(7, dtype="float32")[targets[real]], probs[real])
    smoothed = float(utils.SmoothedCaptionLoss(0.1)(targets, probs))
    assert smoothed == pytest.approx(float(np.mean(one_hot)), rel=1e-5)
    assert abs(smoothed - float(sparse)) > 0.01  # smoothing changes the loss: the test can fail

    model = utils.build_model(utils.ModelConfig(V, F, units=8), utils.TrainingConfig())
    assert utils.TrainingConfig().label_smoothing == 0.1
    model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").loss.smoothing == 0.1


def test_training_from_files_on_disk_equals_training_from_memory(sample_training, tmp_path):
    """Notebook 04's path: the float16 cache memory-mapped and the encoded captions written to
    the run folder; the run gives the figures of the same tables held in memory."""
    prepared, vocab, names, features = sample_training
    cache = mapped(tmp_path, "features", features)
    on_disk = utils.CaptionData.encode(prepared, vocab, names, cache, tmp_path / "captions")
    assert isinstance(on_disk.train[1], np.memmap)
    assert (tmp_path / "captions" / "train-tokens.npy").is_file()
    in_memory = utils.CaptionData.encode(prepared, vocab, names, features)
    np.testing.assert_array_equal(on_disk.val[1], in_memory.val[1])
    training = utils.TrainingConfig(epochs=2, patience=2, **FAST_TRAINING)
    histories = []
    for data, run in ((in_memory, "memory"), (on_disk, "disk")):
        model = utils.build_model(utils.ModelConfig(len(vocab), features.shape[1], units=32),
                                  training, feature_stats=data.feature_statistics())
        histories.append(utils.train_caption_model(model, data, tmp_path / run, training,
                                                   verbose=0))
    for a, b in zip(*histories):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)


def test_feature_statistics_floor_the_variance_and_count_each_image_once():
    features = np.random.default_rng(0).normal(size=(50, 4))
    features[:, 2] = 7.0
    rows = np.repeat(np.arange(50), 5)  # five captions per image
    mean, variance = utils.feature_statistics(features, rows)
    raw = features.var(0)
    np.testing.assert_allclose(mean, features.mean(0))
    np.testing.assert_allclose(variance[[0, 1, 3]], raw[[0, 1, 3]])
    assert variance[2] == pytest.approx(0.01 * raw.mean() + 1e-12)  # the promised floor
    assert variance[2] > 1e-3  # far above the constant column's own variance, 0
    # An image with more captions than another weighs no more in the statistics.
    uneven = np.concatenate([rows, np.zeros(100, int)])
    np.testing.assert_allclose(utils.feature_statistics(features, uneven)[0], features.mean(0))


SMALL_MODEL = dict(units=128, dropout=0.2)
FAST_TRAINING = dict(learning_rate=3e-3, label_smoothing=0.0)


def fit(sample_training, run_dir, epochs, shuffle_images=False, seed=0, extra_callbacks=(),
        lr_plateau_factor=0.5, model_changes=None):
    prepared, vocab, names, features = sample_training
    data = utils.CaptionData.encode(prepared, vocab, names, features)
    if shuffle_images:  # every training caption paired with some other image's features
        rows, tokens = data.train
        data.train = (np.random.default_rng(seed).permutation(len(features))[rows], tokens)
    training = utils.TrainingConfig(epochs=epochs, patience=epochs, seed=seed,
                                    lr_plateau_factor=lr_plateau_factor, **FAST_TRAINING)
    model = utils.build_model(utils.ModelConfig(len(vocab), features.shape[1],
                                                **SMALL_MODEL | (model_changes or {})),
                              training, feature_stats=data.feature_statistics())
    history = utils.train_caption_model(model, data, run_dir, training, extra_callbacks, verbose=0)
    return model, history


def test_a_fall_of_validation_loss_under_the_minimum_gain_is_no_progress(sample_training,
                                                                        tmp_path):
    """MIN_GAIN: an epoch whose validation loss falls by less than it is no progress, to the
    learning-rate schedule (which halves the rate after it) and to early stopping (whose
    patience counts it), while the checkpoint still keeps the lowest loss."""
    prepared, vocab, names, features = sample_training
    data = utils.CaptionData.encode(prepared, vocab, names, features)
    histories = {}
    for gain in (0.0, 10.0):  # 10: no fall of the loss is that large
        training = utils.TrainingConfig(epochs=4, patience=2, min_gain=gain, **FAST_TRAINING)
        model = utils.build_model(utils.ModelConfig(len(vocab), features.shape[1], units=32),
                                  training, feature_stats=data.feature_statistics())
        histories[gain] = utils.train_caption_model(model, data, tmp_path / str(gain), training,
                                                    verbose=0)
        kept = utils.build_model(utils.ModelConfig(len(vocab), features.shape[1], units=32),
                                 training)
        kept.load_weights(tmp_path / str(gain) / utils.WEIGHTS_FILE)
        assert kept.evaluate(data.datasets(64)[1], verbose=0) == pytest.approx(
            min(h["val_loss"] for h in histories[gain]), rel=1e-5)
    losses = [h["val_loss"] for h in histories[0.0]]
    assert all(a - b > utils.PLATEAU_MIN_GAIN for a, b in zip(losses, losses[1:]))
    rate = FAST_TRAINING["learning_rate"]
    assert [h["learning_rate"] for h in histories[0.0]] == pytest.approx([rate] * 4)
    # The first epoch is progress (from no loss at all); then each is none: the rate halves after
    # each (the history logs the rate an epoch trained at), and the run stops after `patience`
    # of them, though its loss still falls.
    assert [h["learning_rate"] for h in histories[10.0]] == pytest.approx(
        [rate, rate, rate / 2])
    assert histories[10.0][2]["val_loss"] < histories[10.0][0]["val_loss"]


def test_model_learns_from_the_images(sample_training, tmp_path):
    _, real = fit(sample_training, tmp_path / "real", 12)
    _, shuffled = fit(sample_training, tmp_path / "shuffled", 12, shuffle_images=True)
    best_real = min(h["val_loss"] for h in real)
    best_shuffled = min(h["val_loss"] for h in shuffled)
    assert best_real < 0.75 * best_shuffled, (best_real, best_shuffled)


def test_training_is_reproducible(sample_training, tmp_path):
    a, _ = fit(sample_training, tmp_path / "a", 1, seed=3)
    b, _ = fit(sample_training, tmp_path / "b", 1, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_interrupted_training_resumes(sample_training, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(sample_training, run, 4, extra_callbacks=[stop_after(2)])
    assert (run / utils.WEIGHTS_FILE).is_file()
    assert [h["epoch"] for h in utils.read_history(run)] == [0, 1]
    counter = stop_after(99)
    _, history = fit(sample_training, run, 4, extra_callbacks=[counter])
    assert counter.started == 2  # epochs 3 and 4 only
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert all(h["learning_rate"] > 0 for h in history)  # the schedule is logged
    assert (run / utils.WEIGHTS_FILE).is_file() and not (run / "backup").exists()
    prepared, vocab, names, features = sample_training
    best = utils.build_caption_model(utils.ModelConfig(len(vocab), features.shape[1],
                                                       **SMALL_MODEL))
    best.load_weights(run / utils.WEIGHTS_FILE)  # with the feature statistics: weights too
    best = utils.compile_model(best, utils.TrainingConfig(**FAST_TRAINING))
    val_data = utils.CaptionData.encode(prepared, vocab, names, features).datasets(64)[1]
    val_loss = best.evaluate(val_data, verbose=0)
    assert val_loss == pytest.approx(min(h["val_loss"] for h in history), rel=1e-3)


def test_expand_prefixes_pre_pads_every_prefix():
    tokens = np.array([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]], "int32")
    prefixes, targets, owners = utils.expand_prefixes(tokens, 3)
    np.testing.assert_array_equal(prefixes, [[0, 0, 2], [0, 2, 5], [2, 5, 6], [0, 0, 2], [0, 2, 7]])
    np.testing.assert_array_equal(targets, [5, 6, 3, 7, 3])
    np.testing.assert_array_equal(owners, [0, 0, 0, 1, 1])


def interrupted_run(sample_training, run, epochs=3):
    with pytest.raises(KeyboardInterrupt):
        fit(sample_training, run, 5, extra_callbacks=[stop_after(epochs)])
    return run / "backup" / "latest.weights.h5"


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_a_damaged_checkpoint_falls_back_to_the_one_before(sample_training, tmp_path):
    latest = interrupted_run(sample_training, tmp_path / "run")
    truncate(latest)  # the interruption hit while it was written
    counter = stop_after(99)
    _, history = fit(sample_training, tmp_path / "run", 5, extra_callbacks=[counter])
    assert counter.started == 3  # epochs 3 (again), 4 and 5
    assert [h["epoch"] for h in history] == [0, 1, 2, 3, 4]


def test_with_no_whole_checkpoint_the_rerun_says_how_to_go_on(sample_training, tmp_path):
    latest = interrupted_run(sample_training, tmp_path / "run")
    truncate(latest)
    truncate(Path(f"{latest}.bkp"))
    with pytest.raises(RuntimeError, match=f"{latest} is damaged and no earlier checkpoint is "
                                           f"whole: delete {latest.parent} to train this run"):
        fit(sample_training, tmp_path / "run", 5)


def test_a_history_row_cut_short_is_dropped(sample_training, tmp_path):
    """A row cut inside a number ("2." for 2.536) was once believed as the epoch's loss."""
    interrupted_run(sample_training, tmp_path / "run", epochs=2)
    history = tmp_path / "run" / "history.csv"
    text = history.read_text()
    history.write_text(text + "2,2.")  # the next epoch's row, cut by the interruption
    with pytest.warns(UserWarning, match="its last row was cut short \\('2,2.'\\), dropped"):
        utils.check_training_state(tmp_path / "run")
    assert history.read_text() == text


@pytest.mark.parametrize("model_changes", [{}, {"architecture": "transformer", "blocks": 1}],
                         ids=["merge", "transformer"])
def test_a_resumed_run_gives_the_uninterrupted_runs_figures(model_changes, sample_training,
                                                            tmp_path):
    """Once it diverged from the first resumed epoch: the shuffle started again at epoch 0's
    order, and the dropout masks at their first. The Transformer has dropout in its blocks too."""
    _, whole = fit(sample_training, tmp_path / "whole", 6, seed=1, model_changes=model_changes)
    with pytest.raises(KeyboardInterrupt):
        fit(sample_training, tmp_path / "cut", 6, seed=1, extra_callbacks=[stop_after(3)],
            model_changes=model_changes)
    _, resumed = fit(sample_training, tmp_path / "cut", 6, seed=1, model_changes=model_changes)
    assert [(h["epoch"], h["loss"], h["val_loss"], h["learning_rate"]) for h in resumed] == [
        (h["epoch"], h["loss"], h["val_loss"], h["learning_rate"]) for h in whole]


def test_early_stopping_and_the_schedule_resume_with_their_counters():
    """Replayed from the logged epochs: two without progress since the best."""
    stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=3)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=4)
    for callback in (stopping, plateau):
        callback.on_train_begin()
    logged = [{"epoch": e, "val_loss": v, "learning_rate": 1e-3}
              for e, v in enumerate([2.0, 1.5, 1.6, 1.7])]
    utils.ReplayedCounters(logged, [stopping, plateau]).on_train_begin()
    assert (stopping.best, stopping.wait) == (1.5, 2)
    assert (plateau.best, plateau.wait) == (1.5, 2)


def test_an_epoch_whose_history_row_was_lost_is_trained_again(sample_training, tmp_path):
    """Interrupted after the checkpoint of epoch 3 was written but before its history row: the
    rerun once resumed at epoch 4, silently, with a history missing epoch 3. It now trains epoch
    3 again from the checkpoint before it, and ends with the uninterrupted run's figures."""
    _, whole = fit(sample_training, tmp_path / "whole", 5, seed=1)
    with pytest.raises(KeyboardInterrupt):
        fit(sample_training, tmp_path / "cut", 5, seed=1, extra_callbacks=[stop_after(3)])
    history = tmp_path / "cut" / "history.csv"
    history.write_text("".join(history.read_text().splitlines(keepends=True)[:-1]))  # epoch 3's
    counter = stop_after(99)
    with pytest.warns(UserWarning, match="epoch 3 was trained but its row is lost; it is trained "
                                         "again"):
        _, resumed = fit(sample_training, tmp_path / "cut", 5, seed=1, extra_callbacks=[counter])
    assert counter.started == 3  # epochs 3 (again), 4 and 5
    assert [(h["epoch"], h["loss"], h["val_loss"]) for h in resumed] == [
        (h["epoch"], h["loss"], h["val_loss"]) for h in whole]
