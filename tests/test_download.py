"""The download helpers against a real HTTP server on loopback (Range requests, cut connections)."""
import http.server
import io
import threading
import time
import zipfile

import pytest

import utils


class Server:
    """Serves `files` (name -> bytes); `cut_after` bytes makes the next response stop short."""

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
                start = int(self.headers["Range"][6:].rstrip("-")) if self.headers["Range"] else 0
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
    with pytest.raises(utils.DownloadError, match="HTTP 404"):
        utils.download_file(server.url + "missing.zip", tmp_path / "m.zip")
    port = server.httpd.server_port
    server.close()
    start = time.time()
    with pytest.raises(utils.DownloadError, match=r"could not download .* save it as .*m.zip"):
        utils.download_file(f"http://127.0.0.1:{port}/m.zip", tmp_path / "m.zip", timeout=5)
    assert time.time() - start < 5


def make_zip(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def flickr8k_zips(n_images=3):
    images = {f"Flicker8k_Dataset/{i}.jpg": b"jpeg" for i in range(n_images)}
    images["__MACOSX/Flicker8k_Dataset/._0.jpg"] = b"junk"
    text = {"Flickr8k.token.txt": "".join(f"{i}.jpg#0\tA photo .\n" for i in range(n_images)),
            "Flickr_8k.trainImages.txt": "0.jpg\n1.jpg\n"}
    return {"Flickr8k_Dataset.zip": make_zip(images), "Flickr8k_text.zip": make_zip(text)}


def test_download_flickr8k_extracts_once(server, tmp_path):
    server.files.update(flickr8k_zips())
    root = utils.download_flickr8k(tmp_path / "flickr8k", base_url=server.url, expected_images=3)
    images_dir, captions_file, splits = utils.find_dataset_files(root)
    assert sorted(p.name for p in images_dir.iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]
    assert captions_file.name == "Flickr8k.token.txt" and list(splits) == ["train"]
    assert not (root / "__MACOSX").exists()
    n_requests = len(server.requests)
    utils.download_flickr8k(root, base_url=server.url, expected_images=3)
    assert len(server.requests) == n_requests


def test_download_flickr8k_checks_what_arrived(server, tmp_path):
    server.files.update(flickr8k_zips(n_images=2))
    with pytest.raises(utils.DownloadError, match="2 images, expected 3"):
        utils.download_flickr8k(tmp_path / "a", base_url=server.url, expected_images=3)
    server.files["Flickr8k_Dataset.zip"] = b"<html>not a zip</html>"
    with pytest.raises(utils.DownloadError, match="corrupt archive"):
        utils.download_flickr8k(tmp_path / "b", base_url=server.url, expected_images=3)
    assert not (tmp_path / "b" / "downloads" / "Flickr8k_Dataset.zip").exists()
