"""The download helpers against a real HTTP server on loopback (Range requests, cut connections)."""
import time

import pytest

import utils
from conftest import make_zip


def test_download_whole_file(server, tmp_path):
    server.files["f.bin"] = bytes(range(256)) * 1000
    path = utils.download_file(server.url + "f.bin", tmp_path / "f.bin")
    assert path.read_bytes() == server.files["f.bin"]
    assert not (tmp_path / "f.bin.part").exists()
    utils.download_file(server.url + "f.bin", tmp_path / "f.bin")
    assert len(server.requests) == 1  # already there: nothing fetched again


def test_interrupted_download_resumes(server, tmp_path):
    body = bytes(range(256)) * 4000
    server.files["big.zip"] = body
    server.cut_after = 300_000
    with pytest.raises(utils.DownloadError, match="after 300000 of 1024000 bytes"):
        utils.download_file(server.url + "big.zip", tmp_path / "big.zip", chunk_size=4096)
    assert (tmp_path / "big.zip.part").stat().st_size == 300_000
    assert not (tmp_path / "big.zip").exists()
    utils.download_file(server.url + "big.zip", tmp_path / "big.zip")
    assert (tmp_path / "big.zip").read_bytes() == body
    assert server.requests[-1] == ("/big.zip", "bytes=300000-")


def test_http_error_and_offline_fail_fast(server, tmp_path):
    with pytest.raises(utils.DownloadError, match="'photo.jpg' is not a web address"):
        utils.download_file("photo.jpg", tmp_path / "m.zip")
    with pytest.raises(utils.DownloadError, match="HTTP 404"):
        utils.download_file(server.url + "missing.zip", tmp_path / "m.zip")
    port = server.httpd.server_port
    server.close()
    start = time.time()
    with pytest.raises(utils.DownloadError, match=r"could not download .* save it as .*m.zip"):
        utils.download_file(f"http://127.0.0.1:{port}/m.zip", tmp_path / "m.zip", timeout=5)
    assert time.time() - start < 5


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
