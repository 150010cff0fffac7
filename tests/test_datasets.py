"""Datasets by name: Flickr8k from a mirror on loopback, and the embedded sample dataset."""
import numpy as np
import pytest
from PIL import Image

import utils
from conftest import make_zip


def flickr8k_zips(n_images=3):
    images = {f"Flicker8k_Dataset/{i}.jpg": b"jpeg" for i in range(n_images)}
    images["__MACOSX/Flicker8k_Dataset/._0.jpg"] = b"junk"
    text = {"Flickr8k.token.txt": "".join(f"{i}.jpg#0\tA photo .\n" for i in range(3)),
            "Flickr_8k.trainImages.txt": "0.jpg\n1.jpg\n", "Flickr_8k.testImages.txt": "2.jpg\n"}
    return {"Flickr8k_Dataset.zip": make_zip(images), "Flickr8k_text.zip": make_zip(text)}


def test_download_flickr8k_extracts_once(server, tmp_path):
    server.files.update(flickr8k_zips())
    root = utils.download_flickr8k(tmp_path / "flickr8k", base_url=server.url)
    images_dir, captions_file, splits = utils.find_dataset_files(root)
    assert sorted(p.name for p in images_dir.iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]
    assert captions_file.name == "Flickr8k.token.txt" and list(splits) == ["train", "test"]
    assert not (root / "__MACOSX").exists()
    n_requests = len(server.requests)
    utils.download_flickr8k(root, base_url=server.url)
    assert len(server.requests) == n_requests


def test_download_flickr8k_checks_what_arrived(server, tmp_path):
    server.files.update(flickr8k_zips(n_images=2))
    with pytest.raises(utils.DownloadError, match="1 of the 3 images named .* missing .*first: 2.jpg"):
        utils.download_flickr8k(tmp_path / "a", base_url=server.url)
    server.files["Flickr8k_Dataset.zip"] = b"<html>not a zip</html>"
    with pytest.raises(utils.DownloadError, match="corrupt archive"):
        utils.download_flickr8k(tmp_path / "b", base_url=server.url)
    assert not (tmp_path / "b" / "downloads" / "Flickr8k_Dataset.zip").exists()


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
