"""The download helpers against a real HTTP server on loopback (Range requests, cut connections)."""
import time

import pytest

import utils


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
    with pytest.raises(utils.DownloadError, match="after 300000 of 1024000 bytes") as info:
        utils.download_file(server.url + "big.zip", tmp_path / "big.zip", chunk_size=4096)
    assert info.value.reason == "the connection closed after 300000 of 1024000 bytes"
    assert (tmp_path / "big.zip.part").stat().st_size == 300_000
    assert not (tmp_path / "big.zip").exists()
    utils.download_file(server.url + "big.zip", tmp_path / "big.zip")
    assert (tmp_path / "big.zip").read_bytes() == body
    assert server.requests[-1] == ("/big.zip", "bytes=300000-")


def test_http_error_and_offline_fail_fast(server, tmp_path):
    with pytest.raises(utils.DownloadError, match="'photo.jpg' is not a web address"):
        utils.download_file("photo.jpg", tmp_path / "m.zip")
    with pytest.raises(utils.DownloadError, match="HTTP 404.*save it as .*m.zip") as info:
        utils.download_file(server.url + "missing.zip", tmp_path / "m.zip")
    assert info.value.reason == "the server answered HTTP 404 Not Found"  # no advice in it
    port = server.httpd.server_port
    server.close()
    start = time.time()
    with pytest.raises(utils.DownloadError, match=r"could not download .* save it as .*m.zip"):
        utils.download_file(f"http://127.0.0.1:{port}/m.zip", tmp_path / "m.zip", timeout=5)
    assert time.time() - start < 5
