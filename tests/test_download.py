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


# What the app fetches for a visitor: public addresses only, 20 MB, 20 s (utils.PUBLIC).
LOOPBACK_ADMITTED = utils.FetchPolicy(public_only=True, max_bytes=1 << 20, deadline_s=2,
                                      allowed_networks=("127.0.0.0/8",))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.jpg",
                                 "data:image/png;base64,iVBORw0KGgo=", "/etc/passwd"])
def test_only_web_addresses_are_fetched(url, tmp_path):
    for policy in (utils.TRUSTED, utils.PUBLIC):
        with pytest.raises(utils.DownloadError, match="not a web address"):
            utils.download_file(url, tmp_path / "x", policy=policy)


@pytest.mark.parametrize("url, kind", [
    ("http://127.0.0.1:9/a.jpg", "loopback"), ("http://[::1]/a.jpg", "loopback"),
    ("http://10.1.2.3/a.jpg", "private"), ("http://192.168.0.1/a.jpg", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"), ("http://0.0.0.0/", "private"),
    ("http://224.0.0.1/", "multicast"), ("http://[::ffff:127.0.0.1]/", "loopback")])
def test_the_app_policy_refuses_addresses_that_are_not_public(url, kind, tmp_path):
    """Literal addresses: checked before any connection, so this needs no network."""
    with pytest.raises(utils.DownloadError) as error:
        utils.download_file(url, tmp_path / "x", policy=utils.PUBLIC)
    assert f"a {kind} address: only public addresses are fetched" in error.value.reason


def test_the_app_policy_refuses_the_loopback_server(server, tmp_path):
    server.files["a.jpg"] = b"jpeg"
    with pytest.raises(utils.DownloadError, match="loopback address"):
        utils.download_file(server.url + "a.jpg", tmp_path / "a.jpg", policy=utils.PUBLIC)
    assert server.requests == [], "refused before connecting"


def redirect(location):
    def answer(handler):
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return answer


def test_every_redirect_is_checked_again(server, tmp_path):
    server.files["a.jpg"] = b"jpeg"
    server.files["hop"] = redirect("/a.jpg")
    assert utils.download_file(server.url + "hop", tmp_path / "a", policy=LOOPBACK_ADMITTED
                               ).read_bytes() == b"jpeg"
    server.files["to-private"] = redirect("http://10.1.2.3/secret")
    with pytest.raises(utils.DownloadError, match="10.1.2.3 is 10.1.2.3, a private address"):
        utils.download_file(server.url + "to-private", tmp_path / "b", policy=LOOPBACK_ADMITTED)
    server.files["to-file"] = redirect("file:///etc/passwd")
    with pytest.raises(utils.DownloadError, match="not a web address"):
        utils.download_file(server.url + "to-file", tmp_path / "c", policy=LOOPBACK_ADMITTED)
    server.files["loop"] = redirect("/loop")
    with pytest.raises(utils.DownloadError, match="more than 5 redirects"):
        utils.download_file(server.url + "loop", tmp_path / "d", policy=LOOPBACK_ADMITTED)


def endless(content_length=None):
    """2 GB of zeros, a megabyte at a time, for as long as the client reads."""
    def answer(handler):
        handler.send_response(200)
        if content_length:
            handler.send_header("Content-Length", str(content_length))
        handler.end_headers()
        try:
            for _ in range(2048):
                handler.wfile.write(bytes(1 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass
    return answer


def test_a_body_over_the_size_cap_is_refused(server, tmp_path):
    server.files["announced"] = endless(content_length=2 << 30)
    with pytest.raises(utils.DownloadError, match="2,147,483,648 bytes, over the limit"):
        utils.download_file(server.url + "announced", tmp_path / "a", policy=LOOPBACK_ADMITTED)
    server.files["unannounced"] = endless()
    started = time.time()
    with pytest.raises(utils.DownloadError, match="over the limit of 1,048,576 bytes"):
        utils.download_file(server.url + "unannounced", tmp_path / "b", policy=LOOPBACK_ADMITTED)
    assert time.time() - started < 2
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.part").exists()


def trickle(data, pause, as_headers=False):
    """A server that sends `data` a byte every `pause` seconds: as the body after its headers,
    or (`as_headers`) as its headers themselves."""
    def answer(handler):
        if not as_headers:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
        try:
            for byte in data:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass
    return answer


@pytest.mark.parametrize("answer", [
    trickle(b"x" * 1000, 0.5),
    trickle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 1000, 0.2, as_headers=True)],
    ids=["body", "headers"])
def test_a_trickle_cannot_outlast_the_deadline(answer, server, tmp_path):
    """The deadline covers the whole exchange: each byte arriving within the read timeout, of
    the headers as of the body, must not keep the request alive past it."""
    server.files["slow"] = answer
    started = time.time()
    with pytest.raises(utils.DownloadError, match="took longer than 2 s") as error:
        utils.download_file(server.url + "slow", tmp_path / "slow", policy=LOOPBACK_ADMITTED)
    assert time.time() - started < 3.5
    assert error.value.reason == "refused: took longer than 2 s"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("url, shown", [
    ("http://[::127.0.0.1]/a.jpg", "127.0.0.1"),       # IPv4-compatible
    ("http://[2002:7f00:1::]/a.jpg", "127.0.0.1"),     # 6to4
    ("http://[64:ff9b::7f00:1]/a.jpg", "127.0.0.1"),   # NAT64
    ("http://[64:ff9b::a01:203]/a.jpg", "10.1.2.3"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/a.jpg", "127.0.0.1")])  # Teredo
def test_ipv6_addresses_that_lead_to_private_ipv4_ones_are_refused(url, shown, tmp_path):
    with pytest.raises(utils.DownloadError, match=f"is {shown}, a (loopback|private) address"):
        utils.download_file(url, tmp_path / "x", policy=utils.PUBLIC)


def test_a_mistyped_allowed_network_fails_when_the_policy_is_made():
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not a network"):
        utils.FetchPolicy(public_only=True, allowed_networks=("10.0.0.0/33",))
    policy = utils.FetchPolicy(public_only=True, allowed_networks=(" 10.0.0.0/8",))
    assert str(policy.allowed_networks[0]) == "10.0.0.0/8"


def test_a_stale_part_file_is_checked_against_the_server_length(server, tmp_path):
    """A .part as long as the file or longer is not taken for the finished download unless the
    server confirms the length; garbage of another length is discarded and fetched again."""
    body = bytes(range(256)) * 40
    server.files["f.zip"] = body
    (tmp_path / "f.zip.part").write_bytes(b"garbage" * 3000)  # longer than the file
    assert utils.download_file(server.url + "f.zip", tmp_path / "f.zip").read_bytes() == body
    assert [r for _, r in server.requests] == ["bytes=21000-", None]
    (tmp_path / "g.zip.part").write_bytes(body)  # whole: the server's 416 confirms its length
    server.files["g.zip"] = body
    assert utils.download_file(server.url + "g.zip", tmp_path / "g.zip").read_bytes() == body


def test_a_checksum_refuses_the_wrong_file(server, tmp_path):
    import hashlib

    body = b"the right file"
    server.files["f.bin"] = body
    with pytest.raises(utils.DownloadError, match="SHA-256 is .*, not 00ff: deleted"):
        utils.download_file(server.url + "f.bin", tmp_path / "f.bin", sha256="00ff")
    assert not list(tmp_path.iterdir())
    digest = hashlib.sha256(body).hexdigest()
    assert utils.download_file(server.url + "f.bin", tmp_path / "f.bin", sha256=digest
                               ).read_bytes() == body


@pytest.mark.parametrize("url, name", [
    ("https://example.com/photos/dog.jpg?size=2", "dog.jpg"), ("https://example.com/..", "image"),
    ("https://example.com/%2e%2e", "image"), ("https://example.com/a/%2F..%2Fetc", "etc"),
    ("https://example.com/" + "x" * 300 + ".jpg", "x" * 96 + ".jpg"),
    ("https://example.com/", "image"),
    ("https://example.com/caf%C3%A9 au lait.png", "caf__au_lait.png")])
def test_a_downloaded_file_is_named_safely(url, name):
    assert utils.safe_file_name(url) == name
