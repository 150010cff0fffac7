"""Datasets by name: Flickr8k in each of its common forms (the original zips from a mirror on
loopback, their extracted folders, Kaggle's copy and its zip), and the embedded sample dataset."""
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

import utils
from conftest import make_zip


def flickr8k_zips(n_images=3):
    images = {f"Flicker8k_Dataset/{i}.jpg": b"jpeg" for i in range(n_images)}
    images["__MACOSX/Flicker8k_Dataset/._0.jpg"] = b"junk"
    text = {"Flickr8k.token.txt": "".join(f"{i}.jpg#0\tA photo .\n" for i in range(3)),
            "Flickr_8k.trainImages.txt": "0.jpg\n1.jpg\n", "Flickr_8k.devImages.txt": "",
            "Flickr_8k.testImages.txt": "2.jpg\n"}
    return {"Flickr8k_Dataset.zip": make_zip(images), "Flickr8k_text.zip": make_zip(text)}


def test_flickr8k_is_downloaded_once_and_extracted_where_asked(server, tmp_path, monkeypatch):
    """The two zips are fetched into downloads/ once; the images go to the local folder named by
    $IMAGE_CAPTIONING_LOCAL_DIR (Colab's own disk), and come back from the zip when it is wiped."""
    monkeypatch.setenv(utils.LOCAL_DIR_VARIABLE, str(tmp_path / "local"))
    server.files.update(flickr8k_zips())
    root = tmp_path / "drive" / "flickr8k"
    found = utils.find_flickr8k(root, base_url=server.url)
    assert found.images_dir.is_relative_to(tmp_path / "local")
    assert sorted(p.name for p in found.images_dir.iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]
    assert found.captions_file == root / "Flickr8k.token.txt"
    assert found.split_files["test"] == root / "Flickr_8k.testImages.txt"
    assert not (found.images_dir.parent / "__MACOSX").exists()
    n_requests = len(server.requests)
    assert utils.find_flickr8k(root, base_url=server.url) == found
    assert len(server.requests) == n_requests

    prepared, _ = utils.prepare_dataset(found.captions_file, found.images_dir, found.split_files,
                                        images_zip=found.images_zip)
    prepared.save(tmp_path / "captions.json")
    shutil.rmtree(tmp_path / "local")  # a new runtime
    again = utils.images_folder(utils.PreparedDataset.load(tmp_path / "captions.json"))
    assert sorted(p.name for p in again.iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]


def test_a_failed_download_says_what_to_put_where(server, tmp_path):
    with pytest.raises(utils.DownloadError) as error:
        utils.find_flickr8k(tmp_path / "flickr8k", base_url=server.url)
    message = str(error.value)
    assert "\n" not in message and "HTTP 404" in message
    assert "Flickr8k_Dataset.zip and Flickr8k_text.zip" in message and "archive.zip" in message
    assert str(tmp_path / "flickr8k") in message
    server.files["Flickr8k_Dataset.zip"] = b"<html>not a zip</html>"
    server.files["Flickr8k_text.zip"] = flickr8k_zips()["Flickr8k_text.zip"]
    with pytest.raises(utils.DownloadError, match="corrupt archive"):
        utils.find_flickr8k(tmp_path / "b", base_url=server.url)
    assert not (tmp_path / "b" / "downloads" / "Flickr8k_Dataset.zip").exists()


def shared_subset(shared, n=12):
    """Names of shared images that have captions in Kaggle's captions.txt (its first 1,000)."""
    kaggle = utils.read_captions(shared / "captions.txt").captions
    return [n for n in sorted(kaggle) if (shared / "Images" / n).is_file()][:n]


def layout_original_zips(shared, names, root):
    text = {"Flickr8k.token.txt": (shared / "Flickr8k.token.txt").read_bytes(),
            **{n: (shared / n).read_bytes() for n in utils.SPLIT_FILE_NAMES.values()}}
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / "Flickr8k_text.zip").write_bytes(make_zip(text))
    (root / "downloads" / "Flickr8k_Dataset.zip").write_bytes(make_zip(
        {f"Flicker8k_Dataset/{n}": (shared / "Images" / n).read_bytes() for n in names}))


def layout_extracted(shared, names, root):
    (root / "Flickr8k_text").mkdir(parents=True)
    for name in ("Flickr8k.token.txt", *utils.SPLIT_FILE_NAMES.values()):
        shutil.copy(shared / name, root / "Flickr8k_text" / name)
    (root / "Flicker8k_Dataset").mkdir()
    for n in names:
        shutil.copy(shared / "Images" / n, root / "Flicker8k_Dataset" / n)


def layout_kaggle(shared, names, root):
    (root / "Images").mkdir(parents=True)
    shutil.copy(shared / "captions.txt", root / "captions.txt")
    for n in names:
        shutil.copy(shared / "Images" / n, root / "Images" / n)


def layout_kaggle_zip(shared, names, root):
    root.mkdir(parents=True)
    (root / "archive.zip").write_bytes(make_zip(
        {"captions.txt": (shared / "captions.txt").read_bytes(),
         **{f"Images/{n}": (shared / "Images" / n).read_bytes() for n in names}}))


@pytest.mark.parametrize("layout", [layout_original_zips, layout_extracted, layout_kaggle,
                                    layout_kaggle_zip], ids=lambda f: f.__name__[7:])
def test_flickr8k_as_users_have_it(layout, shared_flickr8k, tmp_path):
    """Each common form of Flickr8k, built from the real files, prepares the same images with the
    same captions and the official splits (carried in the repository for Kaggle's copy)."""
    names = shared_subset(shared_flickr8k)
    root = tmp_path / "flickr8k"
    layout(shared_flickr8k, names, root)
    found = utils.find_flickr8k(root, base_url="http://127.0.0.1:9/")  # nothing is downloaded
    with pytest.warns(UserWarning, match="are not in"):  # the caption files name 8,091 images
        prepared, report = utils.prepare_dataset(found.captions_file, found.images_dir,
                                                 found.split_files, images_zip=found.images_zip)
    assert sorted(prepared.images) == names
    official = {s: set(utils.read_split_file(utils.FLICKR8K_SPLITS / f))
                for s, f in utils.SPLIT_FILE_NAMES.items()}
    assert all(n in official[info["split"]] for n, info in prepared.images.items())
    token = utils.read_captions(shared_flickr8k / "Flickr8k.token.txt").captions
    for n in names:
        assert [" ".join(r) for r in prepared.images[n]["references"]] == [
            " ".join(utils.tokenize(c)) for c in token[n]]


def test_official_splits_are_carried_whole(shared_flickr8k):
    for name in utils.SPLIT_FILE_NAMES.values():
        assert utils.read_split_file(utils.FLICKR8K_SPLITS / name) == utils.read_split_file(
            shared_flickr8k / name)


def test_a_users_zip_is_checked_before_extraction(tmp_path):
    escaping = tmp_path / "escaping.zip"
    escaping.write_bytes(make_zip({"Images/a.jpg": b"x", "../../outside.txt": b"x"}))
    with pytest.raises(utils.DownloadError, match="outside the target folder"):
        utils.check_zip(escaping)
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Images/zeros.bin", bytes(10_000_000))  # 10 MB of zeros, 10 kB zipped
    assert big.stat().st_size < 100_000
    with pytest.raises(utils.DownloadError, match="10.0 MB extracted|0.0 GB extracted"):
        utils.check_zip(big, max_bytes=1_000_000)
    with pytest.raises(utils.DownloadError, match="1 members"):
        utils.check_zip(big, max_members=0)
    corrupt = tmp_path / "archive.zip"
    corrupt.write_bytes(make_zip({"Images/a.jpg": b"x" * 100})[:-30])
    with pytest.raises(utils.DownloadError, match="replace it"):
        utils.check_zip(corrupt)
    assert corrupt.is_file(), "a user's own file is never deleted"
    assert not (tmp_path.parent / "outside.txt").exists()


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
