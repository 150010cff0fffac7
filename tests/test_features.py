"""Stage 2 with random weights (no download) and small images written by the tests."""
import io
import json
import os
import shutil
import socket
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import utils

SIZE = 75  # InceptionV3's smallest input: the same network, fast enough for CI


@pytest.fixture(scope="module")
def encoder():
    return utils.Encoder("inceptionv3", None, SIZE).build()


def two_colour_image(mode="RGB", size=(40, 30)):
    """Left half red, right half blue: orientation and colour are visible in the pixels."""
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return image.convert(mode)


def write_formats(folder):
    folder.mkdir(exist_ok=True)
    image = two_colour_image()
    image.save(folder / "rgb.jpg")
    image.convert("CMYK").save(folder / "cmyk.jpg")
    image.save(folder / "progressive.jpg", progressive=True)
    rgba = image.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    image.convert("L").save(folder / "gray.png")
    image.convert("P").save(folder / "palette.png")
    image.save(folder / "photo.webp")
    image.save(folder / "photo.bmp")
    return sorted(p.name for p in folder.iterdir())


def test_every_format_loads_as_rgb(tmp_path):
    for name in write_formats(tmp_path):
        array = utils.load_image(tmp_path / name, 32)
        assert array.shape == (32, 32, 3) and array.dtype == np.float32, name
        left, right = array[:, :8].mean((0, 1)), array[:, -8:].mean((0, 1))
        if name == "gray.png":
            assert np.allclose(array[..., 0], array[..., 2]), name
        elif name == "alpha.png":  # half-transparent red over white is pink
            assert left[0] > 240 and 100 < left[1] < 160, (name, left)
        else:
            assert left[0] > 200 and left[2] < 60 and right[2] > 200 and right[0] < 60, (name, left)


def test_exif_orientation_is_applied(tmp_path):
    image = two_colour_image(size=(40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif)
    array = utils.load_image(tmp_path / "rotated.jpg", 32)
    top, bottom = array[:8].mean((0, 1)), array[-8:].mean((0, 1))
    assert top[0] > 200 and bottom[2] > 200  # red (left) ends up on top


def test_bad_files_raise_image_error_naming_them(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    two_colour_image().save(tmp_path / "whole.jpg")
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:300])
    Image.new("1", (10_000, 7_000)).save(tmp_path / "bomb.png")
    for name in ("empty.jpg", "text.jpg", "truncated.jpg", "missing.jpg"):
        with pytest.raises(utils.ImageError, match=name):
            utils.load_image(tmp_path / name, 32)
    with pytest.raises(utils.ImageError, match="bomb.png: 10000x7000 pixels"):
        utils.load_image(tmp_path / "bomb.png", 32)


def test_extraction_skips_and_reports_corrupt_images(tmp_path, encoder):
    names = write_formats(tmp_path / "img")
    (tmp_path / "img" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    names.insert(3, "corrupt.jpg")
    with pytest.warns(UserWarning, match="corrupt.jpg: cannot read"):
        meta = utils.extract_features(tmp_path / "img", names, tmp_path / "cache",
                                      utils.Encoder("inceptionv3", None, SIZE), batch_size=3,
                                      model=encoder)
    kept, features = utils.load_features(tmp_path / "cache")
    assert kept == [n for n in names if n != "corrupt.jpg"]
    assert features.shape == (len(names) - 1, 2048) and features.dtype == np.float16
    assert meta.skipped == 1 and meta.weights == "random"
    assert list(json.loads((tmp_path / "cache" / "skipped.json").read_text())) == ["corrupt.jpg"]
    assert not (tmp_path / "cache" / "chunks").exists()


def test_features_do_not_depend_on_the_batch(sample_root, tmp_path, encoder):
    names = [f"shapes_{i:05d}.jpg" for i in range(7)]
    runs = []
    for batch_size in (1, 4):
        utils.extract_features(sample_root / "Images", names, tmp_path / str(batch_size),
                               utils.Encoder("inceptionv3", None, SIZE), batch_size=batch_size,
                               dtype="float32", model=encoder)
        runs.append(utils.load_features(tmp_path / str(batch_size))[1])
    assert np.allclose(runs[0], runs[1], rtol=1e-4, atol=1e-7)
    assert not np.allclose(runs[0][0], runs[0][1])  # different images, different features


class CountingEncoder:
    """A Keras model that counts the images it encodes and can fail after a number of batches."""

    def __init__(self, model, fail_after=None):
        self.model, self.fail_after, self.images, self.batches = model, fail_after, 0, 0
        self.output_shape = model.output_shape

    def predict_on_batch(self, x):
        if self.fail_after is not None and self.batches == self.fail_after:
            raise KeyboardInterrupt("simulated kernel interrupt")
        self.batches += 1
        self.images += len(x)
        return self.model.predict_on_batch(x)


def test_interrupted_extraction_resumes_without_recomputing(sample_root, tmp_path, encoder):
    names = [f"shapes_{i:05d}.jpg" for i in range(20)]
    args = dict(encoder=utils.Encoder("inceptionv3", None, SIZE), batch_size=2, chunk_size=6, dtype="float32")
    first = CountingEncoder(encoder, fail_after=7)  # dies in the third chunk (batches 7-9)
    with pytest.raises(KeyboardInterrupt):
        utils.extract_features(sample_root / "Images", names, tmp_path / "c", model=first, **args)
    assert not (tmp_path / "c" / "features.npy").exists()
    assert sorted(p.name for p in (tmp_path / "c" / "chunks").glob("*.npy")) == [
        "00000000.npy", "00000006.npy"]
    second = CountingEncoder(encoder)
    utils.extract_features(sample_root / "Images", names, tmp_path / "c", model=second, **args)
    assert second.images == 20 - 12  # only the two chunks that were not finished
    resumed = utils.load_features(tmp_path / "c")
    utils.extract_features(sample_root / "Images", names, tmp_path / "fresh", model=encoder, **args)
    fresh = utils.load_features(tmp_path / "fresh")
    assert resumed[0] == fresh[0] == names
    assert np.allclose(resumed[1], fresh[1], rtol=1e-4, atol=1e-7)
    third = CountingEncoder(encoder)
    utils.extract_features(sample_root / "Images", names, tmp_path / "c", model=third, **args)
    assert third.images == 0  # finished cache: nothing recomputed


def test_cache_is_keyed_by_encoder_weights_and_size(tmp_path):
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"pretend weights")
    encoders = [("inceptionv3", None), ("vgg16", None), ("inceptionv3", "imagenet"),
                ("inceptionv3", None, 150), ("inceptionv3", weights)]
    dirs = {utils.cache_dir(tmp_path, utils.Encoder(*e)) for e in encoders}
    assert len(dirs) == 5
    assert utils.cache_dir(tmp_path, utils.Encoder("InceptionV3", None)).name == \
        "inceptionv3-random-299"


def test_changing_the_encoder_gives_new_features(sample_root, tmp_path, encoder):
    names = ["shapes_00000.jpg", "shapes_00001.jpg"]
    inception = utils.cache_dir(tmp_path, utils.Encoder("inceptionv3", None, SIZE))
    vgg = utils.cache_dir(tmp_path, utils.Encoder("vgg16", None, 32))
    utils.extract_features(sample_root / "Images", names, inception,
                           utils.Encoder("inceptionv3", None, SIZE), model=encoder)
    meta = utils.extract_features(sample_root / "Images", names, vgg, utils.Encoder("vgg16", None, 32))
    assert meta.encoder == "vgg16" and meta.dim == 512
    assert utils.load_features(inception)[1].shape == (2, 2048)


def test_local_weights_file(tmp_path):
    model = utils.Encoder("vgg16", None, 32).build(seed=1)
    model.save_weights(tmp_path / "vgg.weights.h5")
    loaded = utils.Encoder("vgg16", tmp_path / "vgg.weights.h5", 32).build(seed=2)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    assert np.allclose(model.predict_on_batch(x), loaded.predict_on_batch(x))
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        utils.Encoder("vgg16", tmp_path / "nope.h5", 32).build()
    with pytest.raises(ValueError, match="unknown encoder 'alexnet'"):
        utils.Encoder("alexnet", None).build()


def test_imagenet_weights_offline_say_what_to_do(monkeypatch, tmp_path):
    """Offline for certain, online or not: Keras's download goes through a proxy on a closed
    loopback port, into an empty Keras folder (no cached weights)."""
    import keras.src.backend.config

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(urllib.request, "_opener", urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": dead, "https": dead})))
    monkeypatch.setattr(keras.src.backend.config, "_KERAS_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="could not download the ImageNet weights of VGG16"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            utils.Encoder("vgg16", "imagenet", 32).build()


def test_feature_source_of_a_cache_and_of_an_npz(sample_root, tmp_path, encoder):
    names = ["shapes_00000.jpg", "shapes_00001.jpg"]
    cache = utils.cache_dir(tmp_path / "features", utils.Encoder("inceptionv3", None, SIZE))
    with pytest.raises(FileNotFoundError, match="none finished feature caches of inceptionv3; run "
                                                "notebooks/02_extract_features.ipynb first"):
        utils.find_feature_cache(tmp_path / "features", "inceptionv3")
    utils.extract_features(sample_root / "Images", names, cache,
                           utils.Encoder("inceptionv3", None, SIZE), model=encoder)
    assert utils.find_feature_cache(tmp_path / "features", "InceptionV3") == cache
    source = utils.feature_source(cache)
    assert source == utils.FeatureSource("cache", "anywhere", 2048, "inceptionv3", "random", SIZE,
                                         utils.features_fingerprint(cache))
    assert source.path == utils.portable_path(cache) and not Path(source.path).is_absolute()
    npz = tmp_path / "mine.npz"
    np.savez(npz, names=np.array(names), features=np.zeros((2, 7), "float16"))
    fingerprint = utils.features_fingerprint(npz)
    assert utils.feature_source(npz) == utils.FeatureSource("external", "x", 7,
                                                            fingerprint=fingerprint)
    assert utils.feature_source(npz, "EfficientNet_Lite0") == utils.FeatureSource(
        "external", "x", 7, "efficientnet_lite0", "imagenet", 224, fingerprint)
    # The same features anywhere are the same; other content is not.
    copy = tmp_path / "elsewhere" / "copy.npz"
    copy.parent.mkdir()
    copy.write_bytes(npz.read_bytes())
    assert utils.feature_source(copy) == utils.feature_source(npz)
    np.savez(copy, names=np.array(names), features=np.ones((2, 7), "float16"))
    assert utils.feature_source(copy) != utils.feature_source(npz)
    with pytest.raises(ValueError, match="unknown encoder 'alexnet'; choose one of inceptionv3"):
        utils.feature_source(npz, "alexnet")
    grids = tmp_path / "grids.npz"
    np.savez(grids, names=np.array(names), features=np.zeros((2, 4, 7), "float16"))
    assert not utils.has_grids(cache) and not utils.has_grids(npz) and utils.has_grids(grids)
    other_size = utils.Encoder("inceptionv3", None, 80)
    utils.extract_features(sample_root / "Images", names[:1],
                           utils.cache_dir(tmp_path / "features", other_size), other_size)
    with pytest.raises(FileNotFoundError, match="2 .*inceptionv3-random-75.*set FEATURES"):
        utils.find_feature_cache(tmp_path / "features", "inceptionv3")


def grey_file(array, fmt, name):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)  # uint16: I;16, int32: I, float32: F
    buffer.seek(0)
    buffer.name = name
    return buffer


@pytest.mark.parametrize("array, fmt, scale", [
    ((np.arange(4096).reshape(64, 64) * 16).astype("uint16"), "PNG", 1 / 257),
    ((np.arange(4096).reshape(64, 64) * 16).astype("int32"), "TIFF", 1 / 257),
    ((np.arange(4096).reshape(64, 64) / 4095).astype("float32"), "TIFF", 255)],
    ids=["16-bit png", "int32 tiff", "float32 tiff"])
def test_deep_images_are_scaled_to_8_bits_not_clipped(array, fmt, scale):
    """A 16-bit PNG once loaded as pure white, a float TIFF as black: each pixel is now its value
    scaled from the file's range to 0-255."""
    loaded = utils.load_image(grey_file(array, fmt, f"deep.{fmt.lower()}"), 64)
    assert np.array_equal(loaded[..., 0], loaded[..., 2])
    np.testing.assert_allclose(loaded[..., 0], np.round(array.astype("float64") * scale), atol=1)
    assert loaded.min() == 0 and loaded.max() >= 254


def test_float_pixels_out_of_any_known_range_are_refused():
    array = np.full((8, 8), -3.5, "float32")
    with pytest.raises(utils.ImageError, match="odd.tiff: F pixels from -3.5 to"):
        utils.load_image(grey_file(array, "TIFF", "odd.tiff"), 8)


def test_a_large_jpeg_decodes_at_reduced_scale_to_the_same_picture(tmp_path):
    rng = np.random.default_rng(0)
    small = rng.uniform(0, 255, (30, 40, 3)).astype("uint8")
    big = Image.fromarray(small).resize((4000, 3000), Image.BILINEAR)
    big.save(tmp_path / "big.jpg", quality=90)
    full = np.asarray(Image.open(tmp_path / "big.jpg").convert("RGB").resize((299, 299),
                                                                            Image.BILINEAR))
    loaded = utils.load_image(tmp_path / "big.jpg", 299)
    assert np.abs(loaded - full).mean() < 3  # the same picture, not pixel for pixel
    with Image.open(tmp_path / "big.jpg") as image:
        image.draft("RGB", (utils.DECODE_SIZE, utils.DECODE_SIZE))
        assert image.size == (1000, 750)  # decoded at 1/4 scale: 16 times fewer pixels


def test_a_changed_image_is_read_again(sample_root, tmp_path, encoder):
    """A finished cache once never looked at its images again: a replaced photo kept the
    features of the old one."""
    images = tmp_path / "Images"
    shutil.copytree(sample_root / "Images", images)
    names = [f"shapes_{i:05d}.jpg" for i in range(8)]
    args = dict(encoder=utils.Encoder("inceptionv3", None, SIZE), batch_size=4, dtype="float32")
    utils.extract_features(images, names, tmp_path / "c", model=encoder, **args)
    before = np.array(utils.load_features(tmp_path / "c")[1])
    shutil.copy(sample_root / "Images" / "shapes_00100.jpg", images / "shapes_00003.jpg")
    os.utime(images / "shapes_00003.jpg", ns=(1, 1))  # surely another modification time
    counter = CountingEncoder(encoder)
    utils.extract_features(images, names, tmp_path / "c", model=counter, **args)
    assert counter.images == 1
    after = np.array(utils.load_features(tmp_path / "c")[1])
    utils.extract_features(sample_root / "Images", ["shapes_00100.jpg"], tmp_path / "one",
                           model=encoder, **args)
    np.testing.assert_allclose(after[3], utils.load_features(tmp_path / "one")[1][0], rtol=1e-4,
                               atol=1e-6)
    assert np.array_equal(np.delete(after, 3, 0), np.delete(before, 3, 0))
    again = CountingEncoder(encoder)
    utils.extract_features(images, names, tmp_path / "c", model=again, **args)
    assert again.images == 0


def test_sharded_extraction_equals_the_unsharded_cache(sample_root, tmp_path, encoder):
    """Three shards, extracted in any order, each resuming on its own, then joined: the same
    cache as one run, value for value; and a join refuses chunks that miss or repeat an image."""
    names = [f"shapes_{i:05d}.jpg" for i in range(20)]
    args = dict(encoder=utils.Encoder("inceptionv3", None, SIZE), batch_size=2, chunk_size=3, dtype="float32")
    images = sample_root / "Images"
    utils.extract_features(images, names, tmp_path / "whole", model=encoder, **args)
    cache = tmp_path / "sharded"
    for i in (2, 0, 1):
        counting = CountingEncoder(encoder)
        assert utils.extract_features(images, names, cache, model=counting, shard=(i, 3),
                                      **args) is None
        assert counting.images == sum(len(names[s:s + 3]) for s in range(0, 20, 3)
                                      if (s // 3) % 3 == i)  # its own chunks only
    again = CountingEncoder(encoder)
    assert utils.extract_features(images, names, cache, model=again, shard=(1, 3), **args) is None
    assert again.images == 0  # a shard resumes: its chunks are done
    joiner = CountingEncoder(encoder)
    meta = utils.extract_features(images, names, cache, model=joiner, **args)
    assert joiner.images == 0 and meta.count == 20 and not (cache / "chunks").exists()
    whole, sharded = utils.load_features(tmp_path / "whole"), utils.load_features(cache)
    assert sharded[0] == whole[0] == names
    np.testing.assert_array_equal(np.asarray(sharded[1]), np.asarray(whole[1]))
    with pytest.raises(ValueError, match=r"give \(i, n\)"):
        utils.extract_features(images, names, tmp_path / "x", model=encoder, shard=(3, 3), **args)

    broken = tmp_path / "broken"
    utils.extract_features(images, names[:6], broken, model=encoder, shard=(0, 2), **args)
    utils.extract_features(images, names[:6], broken, model=encoder, shard=(1, 2), **args)
    record = utils.read_json(broken / "chunks" / "00000003.json")
    record["names"][0] = names[0]  # a chunk that says it holds the first image again
    utils.write_json(broken / "chunks" / "00000003.json", record)
    with pytest.raises(RuntimeError, match=r"do not hold every image once \(missing "
                                           r"\['shapes_00003.jpg'\], twice \['shapes_00000.jpg'\]"):
        utils.extract_features(images, names[:6], broken, model=encoder, **args)


def test_a_grid_cache_serves_both_requests_and_a_pooled_one_is_extracted_again(sample_root,
                                                                              tmp_path):
    """Grids at 139x139 (3x3 positions): the pooled vectors are their means; a cache with grids
    serves a request without (nothing extracted); a cache, or an interrupted run's chunk, without
    grids is extracted again when grids are asked for; a changed image's grid is read again, and
    only its own."""
    from conftest import GRID_INPUT_SIZE

    names = [f"shapes_{i:05d}.jpg" for i in range(5)]
    images = tmp_path / "Images"
    images.mkdir()
    for name in names + ["shapes_00100.jpg"]:
        shutil.copy(sample_root / "Images" / name, images / name)
    args = dict(encoder=utils.Encoder("inceptionv3", None, GRID_INPUT_SIZE), batch_size=2, chunk_size=3)
    pooled = utils.Encoder("inceptionv3", None, GRID_INPUT_SIZE).build()
    grid_encoder = utils.Encoder("inceptionv3", None, GRID_INPUT_SIZE).build(grid=True)
    cache, cut = tmp_path / "cache", tmp_path / "interrupted"
    utils.extract_features(images, names, cache, model=pooled, **args)
    assert utils.finished_cache(cache, names) and not utils.finished_cache(cache, names, grid=True)
    assert not utils.has_grids(cache)
    assert not utils.finished_cache(cache, names[:4])  # other images: not this cache
    with pytest.raises(KeyboardInterrupt):  # the first chunk (3 images) done, without grids
        utils.extract_features(images, names, cut, model=CountingEncoder(pooled, 2), **args)
    for folder in (cache, cut):
        counting = CountingEncoder(grid_encoder)
        meta = utils.extract_features(images, names, folder, model=counting, grid=True, **args)
        assert counting.images == 5 and meta.positions == 9 and utils.has_grids(folder)
    assert utils.finished_cache(cache, names, grid=True) == utils.finished_cache(cache, names)
    again = CountingEncoder(grid_encoder)
    utils.extract_features(images, names, cache, model=again, **args)  # pooled asked: served
    assert again.images == 0
    loaded, grids = utils.load_features(cache, grid=True)
    assert loaded == names and grids.shape == (5, 9, meta.dim) and grids.dtype == "float16"
    np.testing.assert_allclose(np.asarray(utils.load_features(cache)[1], "float32"),
                               np.asarray(grids, "float32").mean(1), rtol=2e-3, atol=2e-3)

    before = np.array(grids)
    shutil.copy(images / "shapes_00100.jpg", images / names[3])
    os.utime(images / names[3], ns=(1, 1))  # surely another modification time
    counting = CountingEncoder(grid_encoder)
    utils.extract_features(images, names, cache, model=counting, **args)  # pooled asked
    assert counting.images == 1
    utils.extract_features(images, ["shapes_00100.jpg"], tmp_path / "one", model=grid_encoder,
                           grid=True, **args)
    after, fresh = utils.load_features(cache, grid=True)[1], utils.load_features(
        tmp_path / "one", grid=True)[1]
    np.testing.assert_array_equal(after[3], fresh[0])
    assert np.array_equal(np.delete(after, 3, 0), np.delete(before, 3, 0))
    np.testing.assert_allclose(np.asarray(utils.load_features(cache)[1][3], "float32"),
                               np.asarray(fresh[0], "float32").mean(0), rtol=2e-3, atol=2e-3)
    assert not np.allclose(np.asarray(before[3], "float32"), np.asarray(fresh[0], "float32"))


def test_random_encoders_built_at_once_in_threads_get_their_seeded_weights(tmp_path):
    """The app serves several sessions: two runs of the sample loaded at once each rebuilt their
    random encoder from global random state the other drew from too (measured: neither got the
    weights of its seed), and captioned new photos from features unlike their training ones."""
    import threading

    expected = utils.Encoder("inceptionv3", None, SIZE).build().get_weights()
    built = {}

    def build(i):
        built[i] = utils.Encoder("inceptionv3", None, SIZE).build().get_weights()

    threads = [threading.Thread(target=build, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for weights in built.values():
        assert len(weights) == len(expected)
        assert all(np.array_equal(a, b) for a, b in zip(weights, expected))


def test_a_large_16_bit_image_is_scaled_in_strips_not_copied_whole(tmp_path):
    """A 16-megapixel 16-bit PNG: once a float64 copy at full size (128 MB here, 1.2 GB at 60
    megapixels); now its rows are scaled and reduced a strip at a time, to the same picture."""
    import tracemalloc

    side = 4096
    array = (np.add.outer(np.arange(side), np.arange(side)) * 8).astype("uint16")
    Image.fromarray(array).save(tmp_path / "deep.png")
    tracemalloc.start()
    loaded = utils.load_image(tmp_path / "deep.png", 64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 24 << 20, f"{peak / 2 ** 20:.0f} MB of arrays at once"
    expected = np.asarray(Image.fromarray(np.round(array / 257).astype("uint8")).reduce(8)
                          .resize((64, 64), Image.BILINEAR), dtype="float32")
    assert np.abs(loaded[..., 0] - expected).max() <= 1


def test_a_float_image_with_a_nan_pixel_says_so():
    array = np.linspace(0, 1, 64, dtype="float32").reshape(8, 8)
    array[2, 3] = np.nan
    with pytest.warns(UserWarning, match="nan.tiff: 1 pixels are not numbers"):
        loaded = utils.load_image(grey_file(array, "TIFF", "nan.tiff"), 8)
    assert loaded[0, 7, 0] == round(array[0, 7] * 255) and loaded[2, 3, 0] == 0
    with pytest.raises(utils.ImageError, match="allnan.tiff: no pixel is a number"):
        utils.load_image(grey_file(np.full((8, 8), np.nan, "float32"), "TIFF", "allnan.tiff"), 8)


def test_a_second_extraction_into_one_cache_is_refused_while_shards_share_it(sample_root,
                                                                              tmp_path, encoder):
    """Two extractions of one cache at once once crashed one and left a stale chunks/ folder:
    the second is now refused by name; shards of one cache still run side by side."""
    import fcntl

    names = [f"shapes_{i:05d}.jpg" for i in range(4)]
    args = dict(encoder=utils.Encoder("inceptionv3", None, SIZE), batch_size=2, chunk_size=2, model=encoder)
    cache = tmp_path / "cache"
    cache.mkdir()
    with open(cache / ".lock", "a") as running:  # an extraction in another process, say
        fcntl.flock(running, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RuntimeError, match=f"{cache} is being written by another extraction"):
            utils.extract_features(sample_root / "Images", names, cache, **args)
        assert not (cache / "chunks").exists()
    with open(cache / ".lock", "a") as shared, open(cache / ".lock-shard-0-of-2", "a") as first:
        fcntl.flock(shared, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shard 0 of 2 is running
        fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert utils.extract_features(sample_root / "Images", names, cache, shard=(1, 2),
                                      **args) is None
        with pytest.raises(RuntimeError, match="another extraction of shard 0 of 2"):
            utils.extract_features(sample_root / "Images", names, cache, shard=(0, 2), **args)
        with pytest.raises(RuntimeError, match="being written by another extraction"):
            utils.extract_features(sample_root / "Images", names, cache, **args)  # the join
    assert utils.extract_features(sample_root / "Images", names, cache, **args).count == 4


def test_a_preview_keeps_the_photos_shape():
    """Figures and the app once showed every photo squashed to the encoder's square."""
    wide = two_colour_image(size=(600, 300))
    preview = utils.preview_image(wide, 256)
    assert preview.shape == (128, 256, 3) and preview.dtype == np.uint8
    assert tuple(preview[64, 10]) == (255, 0, 0) and tuple(preview[64, 250]) == (0, 0, 255)
    assert utils.preview_image(two_colour_image(size=(40, 30)), 256).shape == (30, 40, 3)


@pytest.mark.parametrize("encoder, dataset, weights", [
    ("inceptionv3", "sample", None), ("inceptionv3", "flickr8k", "imagenet"),
    ("efficientnet_lite0", "sample", "imagenet"), ("efficientnet_lite0", "flickr8k", "imagenet")])
def test_auto_weights_are_random_only_where_imagenet_ones_need_a_download(encoder, dataset,
                                                                           weights):
    assert utils.resolve_weights("auto", dataset, encoder) == weights
    assert utils.resolve_weights("file.h5", dataset, encoder) == "file.h5"


def test_an_npz_with_a_name_twice_or_a_value_not_finite_is_refused_by_name(tmp_path):
    """One NaN would make every standardised feature NaN (a model blind to images, and nothing
    said); a name twice would drop one image's captions unnamed."""
    names = ["a.jpg", "b.jpg", "c.jpg"]
    features = np.ones((3, 4), "float16")
    features[1, 2] = np.nan
    np.savez(tmp_path / "nan.npz", names=np.array(names), features=features)
    with pytest.raises(ValueError, match="nan.npz: features of 1 images are not finite .*'b.jpg'"):
        utils.load_features(tmp_path / "nan.npz")
    np.savez(tmp_path / "twice.npz", names=np.array(["a.jpg", "b.jpg", "a.jpg"]),
             features=np.ones((3, 4), "float16"))
    with pytest.raises(ValueError, match="twice.npz: 1 image names twice, e.g. 'a.jpg'"):
        utils.load_features(tmp_path / "twice.npz")
