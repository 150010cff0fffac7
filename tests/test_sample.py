import numpy as np
from PIL import Image

import utils


def test_sample_dataset_is_deterministic(tmp_path):
    a = utils.make_sample_dataset(tmp_path / "a", n_images=12, val_size=2, test_size=2, seed=5)
    b = utils.make_sample_dataset(tmp_path / "b", n_images=12, val_size=2, test_size=2, seed=5)
    c = utils.make_sample_dataset(tmp_path / "c", n_images=12, val_size=2, test_size=2, seed=6)
    token = "Flickr8k.token.txt"
    assert (a / token).read_text() == (b / token).read_text() != (c / token).read_text()
    for name in ("shapes_00000.jpg", "shapes_00011.jpg"):
        assert (a / "Images" / name).read_bytes() == (b / "Images" / name).read_bytes()


def test_sample_dataset_has_flickr8k_layout(sample_root):
    images_dir, captions_file, split_files = utils.find_dataset_files(sample_root)
    prepared, report = utils.prepare_dataset(captions_file, images_dir, split_files)
    assert report["images_per_split"] == {"train": 300, "val": 50, "test": 50}
    assert report["missing_images"] == [] and report["malformed_lines"] == []
    assert all(len(info["captions"]) == 5 for info in prepared.images.values())
    assert len({c for info in prepared.images.values() for c in info["captions"]}) > 300


def test_sample_captions_describe_the_pixels(sample_root):
    """The colour a one-shape caption names is the colour of the picture's non-background pixels."""
    cf = utils.read_captions(sample_root / "Flickr8k.token.txt")
    checked = 0
    for name, captions in cf.captions.items():
        words = captions[0].lower().split()
        if len(words) != 8 or words[3] != "on" or words[6] != "background":
            continue  # only "a <colour> <shape> on a <bg> background ."
        pixels = np.asarray(Image.open(sample_root / "Images" / name)).reshape(-1, 3).astype(int)
        background = np.array(utils.BACKGROUNDS[words[5]])
        shape = pixels[np.abs(pixels - background).sum(1) > 150]
        names = list(utils.COLOURS)
        nearest = np.argmin([np.abs(shape.mean(0) - utils.COLOURS[c]).sum() for c in names])
        assert names[nearest] == words[1], name
        checked += 1
    assert checked > 50
