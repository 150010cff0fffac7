"""The Streamlit app: its logic through Streamlit's AppTest, and one upload in a real headless
Chromium (Debian's chromium and chromedriver, driven by Selenium)."""
import hashlib
import html
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

import utils
from conftest import REPO, SHIPPED_RUN, Server, scored_result, train_sample_run

# Importing streamlit sets MPLBACKEND=Agg for the whole process; the notebook kernels that other
# tests start inherit the environment and would then show no plots. Put it back as it was.
_backend = os.environ.get("MPLBACKEND")
from streamlit.testing.v1 import AppTest  # noqa: E402

os.environ.pop("MPLBACKEND") if _backend is None else os.environ.update(MPLBACKEND=_backend)

APP = str(REPO / "app.py")
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def models_dir(sample_training, tmp_path_factory):
    """Two runs trained on the sample, one with test scores, and one trained on external
    features (it cannot caption)."""
    root = tmp_path_factory.mktemp("models")
    train_sample_run(root / "shapes-small", sample_training, seed=0, units=64)
    train_sample_run(root / "shapes-large", sample_training, seed=1, units=128)
    greedy, beam = utils.DecodingSetting(1, 0.0, 2), utils.DecodingSetting(3, 1.0, 2)
    utils.write_evaluation(root / "shapes-small", "test", [
        scored_result(greedy, {"bleu4": 0.4321, "cider_d": 1.234, "meteor": 0.2345}),
        scored_result(beam, {"bleu4": 0.5432, "cider_d": 2.345, "meteor": None}),
        scored_result(greedy, {"bleu4": 0.1111, "cider_d": 0.111}, shuffled_images=True)],
        images=50)
    shutil.copytree(root / "shapes-small", root / "theirs-external")
    config = utils.read_json(root / "theirs-external" / "config.json")
    config["features"] = {"kind": "external", "path": "mine.npz", "dim": config["features"]["dim"],
                          "encoder": None, "weights": None, "input_size": None}
    utils.write_json(root / "theirs-external" / "config.json", config)
    return root


def expected_caption(run_dir, image, setting=utils.DEFAULT_DECODING):
    """The caption `utils` gives, as shown (an empty one says so), by default with the app's
    default decoding."""
    return utils.caption_image(utils.Captioner.from_run(run_dir), image, setting).shown


def shown(elements):
    """The texts of Markdown messages as a reader sees them: the app makes the Markdown of
    others' words (a run's name) literal with backslashes."""
    return [re.sub(r"\\(.)", r"\1", e.value) for e in elements]


def texts(block, kind):
    """The texts the app wrote as plain text (escaped HTML) of one kind in `block` (at.main,
    at.sidebar): "caption", "run" or "about"."""
    return [html.unescape(found.group(1)) for e in block.get("html")
            if (found := re.fullmatch(f'<div class="{kind}" style="[^"]*">(.*)</div>', e.value))]


def captions(at):
    return texts(at.main, "caption")


def app(monkeypatch, models_dir):
    monkeypatch.setenv("CAPTIONING_MODELS_DIR", str(models_dir))
    return AppTest.from_file(APP, default_timeout=180).run()


def png_bytes(size=(64, 64), colour="red"):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_no_run_says_what_to_run(monkeypatch, tmp_path):
    at = app(monkeypatch, tmp_path / "empty")
    assert not at.exception
    assert "make run" in at.warning[0].value and not at.main.file_uploader
    assert "a shared run" in at.warning[0].value and at.sidebar.text_input(key="run_address")


@pytest.mark.parametrize("setting, address, allowed", [
    (None, "localhost", True), (None, "0.0.0.0", False), ("on", "0.0.0.0", True),
    ("off", "localhost", False)])
def test_who_may_add_runs_is_the_operators_choice(monkeypatch, tmp_path, setting, address,
                                                  allowed):
    """A run a visitor adds is every later visitor's: by default only a page this machine
    alone reaches offers it (.streamlit/config.toml: localhost); the operator says otherwise."""
    from streamlit import config

    if setting:
        monkeypatch.setenv("CAPTIONING_RUN_UPLOADS", setting)
    before = config.get_option("server.address")
    config.set_option("server.address", address)  # as `--server.address` sets it
    try:
        at = app(monkeypatch, tmp_path / "empty")
    finally:
        config.set_option("server.address", before)
    assert not at.exception
    assert any(t.key == "run_address" for t in at.sidebar.text_input) == allowed
    assert ("a shared run" in at.warning[0].value) == allowed


def test_upload_is_captioned_by_each_run_side_by_side(monkeypatch, models_dir, sample_root):
    at = app(monkeypatch, models_dir)
    assert at.sidebar.multiselect[0].value == ["shapes-large"]  # one run, by default
    at.sidebar.multiselect[0].set_value(["shapes-large", "shapes-small"]).run()
    assert texts(at.sidebar, "run") == ["shapes-large", "shapes-small"]
    assert texts(at.sidebar, "about")[1].startswith(
        "merge model, sample dataset, inceptionv3 features (random weights), ")
    scores = at.sidebar.table[0].value  # shapes-small's: shapes-large is not evaluated
    assert scores.to_dict("index") == {  # the shuffled control is for notebook 05
        "greedy": {"BLEU-4": "0.432", "METEOR": "0.234", "CIDEr-D": "1.234"},
        "beam 3": {"BLEU-4": "0.543", "METEOR": "", "CIDEr-D": "2.345"}}
    assert shown(at.sidebar.caption) == [
        "not evaluated yet: run notebook 05 for its scores",
        "COCO evaluation on the test split. greedy: no repeated 2-gram; beam 3: length penalty 1, "
        "no repeated 2-gram"]
    sample = utils.SAMPLE_RUN_WARNING + " For real photos, train on Flickr8k"
    assert [w.value.startswith(sample) for w in at.sidebar.warning] == [True, True]

    photo = sorted((sample_root / "Images").iterdir())[0]
    at.file_uploader[0].upload(photo.name, photo.read_bytes(), "image/png").run()
    assert not at.exception and not at.error
    assert captions(at) == [expected_caption(models_dir / run, photo)
                            for run in ("shapes-large", "shapes-small")]
    assert [w.value.startswith(sample) for w in at.main.warning] == [True, True]  # under each

    greedy = utils.DecodingSetting(1, 0.0, utils.DEFAULT_DECODING.no_repeat_ngram)
    at.sidebar.radio[0].set_value("greedy").run()
    assert captions(at) == [expected_caption(models_dir / run, photo, greedy)
                                   for run in ("shapes-large", "shapes-small")]
    at.sidebar.checkbox(key="no_repeat").uncheck().run()
    free = utils.DecodingSetting(1, 0.0, 0)
    assert captions(at) == [expected_caption(models_dir / run, photo, free)
                                   for run in ("shapes-large", "shapes-small")]


def test_a_run_on_real_photos_is_the_default_and_the_sample_points_to_it(monkeypatch, models_dir,
                                                                          tmp_path):
    """After `make run` beside the shipped run, the page opens on the shipped run, and a sample
    run's warning says to choose it rather than to train one."""
    folder = tmp_path / "models"
    shutil.copytree(models_dir / "shapes-small", folder / "sample-inceptionv3")
    shutil.copytree(SHIPPED_RUN, folder / SHIPPED_RUN.name)
    at = app(monkeypatch, folder)
    assert at.sidebar.multiselect[0].value == [SHIPPED_RUN.name]
    at.sidebar.multiselect[0].set_value(["sample-inceptionv3"]).run()
    assert at.sidebar.warning[0].value == (utils.SAMPLE_RUN_WARNING + " For real photos, choose "
                                           "flickr8k\\-pretrained in the sidebar.")


def test_bad_inputs_are_reported_and_the_rest_captioned(monkeypatch, models_dir, sample_root):
    at = app(monkeypatch, models_dir)
    photo = sorted((sample_root / "Images").iterdir())[1]
    huge = png_bytes((9000, 7000))  # 63 megapixels: refused before decoding
    at.file_uploader[0].set_value([("notes.txt", b"hello, not an image", "text/plain"),
                                   ("truncated.jpg", photo.read_bytes()[:200], "image/jpeg"),
                                   ("huge.png", huge, "image/png"),
                                   (photo.name, photo.read_bytes(), "image/png")]).run()
    errors = [e.value for e in at.error]
    assert not at.exception
    assert errors[0].startswith("notes.txt: cannot read as an image")
    assert errors[1].startswith("truncated.jpg: cannot read as an image")
    assert errors[2].startswith("huge.png: 9000x7000 pixels is more than")
    assert len(captions(at)) == 1  # the good photo, by the run chosen by default

    at.sidebar.multiselect[0].set_value(["theirs-external", "shapes-small"]).run()
    assert shown(at.info) == [
        "Run theirs-external: This run was trained on features made outside this repository "
        "(mine.npz), so it cannot encode a new photo the same way: it captions the images whose "
        "features you give it (FEATURES in notebook 05). To caption your own photos, train a run "
        "on features of notebook 02, or name the network that made these (FEATURES_ENCODER in "
        "notebook 04)."]
    assert not any("theirs-external" in e.value for e in at.error)
    assert len(captions(at)) == 1


def test_image_from_a_url(monkeypatch, models_dir, sample_root, server):
    photo = sorted((sample_root / "Images").iterdir())[2]
    server.files["photo.png"] = photo.read_bytes()
    at = app(monkeypatch, models_dir)
    at.text_input[0].set_value(server.url + "photo.png").run()
    assert at.error[0].value == (
        f"{server.url}photo.png: could not fetch the image (refused: 127.0.0.1 is 127.0.0.1, a "
        "loopback address: only public addresses are fetched). Check the address in your "
        "browser, or save the photo and upload it above.")
    assert "at most 20 MB" in at.text_input[0].label
    assert server.requests == []

    # An operator may admit a closed network, as this test admits loopback.
    monkeypatch.setenv("CAPTIONING_ALLOW_NETWORKS", "127.0.0.0/8")
    at = app(monkeypatch, models_dir)
    at.text_input[0].set_value(server.url + "photo.png").run()
    assert not at.error
    assert captions(at)[0] == expected_caption(models_dir / "shapes-large", photo)

    # Errors say what went wrong and what to do on a web page (no file paths, no "run again").
    advice = "Check the address in your browser, or save the photo and upload it above."
    at.text_input[0].set_value(server.url + "missing.png").run()
    assert at.error[0].value == (f"{server.url}missing.png: could not fetch the image (the server "
                                 f"answered HTTP 404 Not Found). {advice}")
    port = server.httpd.server_port
    server.close()
    at.text_input[0].set_value(f"http://127.0.0.1:{port}/gone.png").run()
    assert at.error[0].value.startswith(f"http://127.0.0.1:{port}/gone.png: could not fetch the "
                                        "image (no answer from the server: ")
    assert at.error[0].value.endswith(advice)
    at.text_input[0].set_value("not a url").run()
    assert at.error[0].value == ("not a url: could not fetch the image (not a web address: it "
                                 f"starts with http:// or https://). {advice}")


@pytest.mark.parametrize("path", ["..", "x" * 300 + ".png"])
def test_an_address_whose_name_is_no_file_name_is_fetched_safely(path, monkeypatch, models_dir,
                                                                 sample_root):
    """Once an uncaught OSError naming the server's temporary folder ("/.." or a long name)."""
    photo = sorted((sample_root / "Images").iterdir())[2]
    server = Server({path: photo.read_bytes()})
    try:
        monkeypatch.setenv("CAPTIONING_ALLOW_NETWORKS", "127.0.0.0/8")
        at = app(monkeypatch, models_dir)
        at.text_input[0].set_value(server.url + path).run()
    finally:
        server.close()
    assert not at.exception and not at.error
    assert captions(at)[0] == expected_caption(models_dir / "shapes-large", photo)


def test_a_mistyped_allowed_network_stops_the_page_at_once(monkeypatch, models_dir):
    monkeypatch.setenv("CAPTIONING_ALLOW_NETWORKS", "10.0.0.0/8, 192.168.1.300/24")
    at = app(monkeypatch, models_dir)
    assert not at.exception
    assert at.error[0].value == ("CAPTIONING_ALLOW_NETWORKS: '192.168.1.300/24' is not a network "
                                 "(for example 10.0.0.0/8 or fd00::/8). Correct it and start the "
                                 "app again.")
    assert not at.file_uploader


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def streamlit_server(tmp_path):
    """Starts the app's server on a runs folder, as a user starts it (`make app`); gives its
    address. What its terminal shows is kept in tmp_path/terminal.txt."""
    servers = []

    def start(models_dir):
        port = free_port()
        env = dict(os.environ, CAPTIONING_MODELS_DIR=str(models_dir))
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user starts it: `make app`
        terminal = open(tmp_path / "terminal.txt", "w")
        process = subprocess.Popen(  # .streamlit/config.toml's settings, as `make app` has them
            [sys.executable, "-m", "streamlit", "run", APP, "--server.headless=true",
             f"--server.port={port}", "--server.address=127.0.0.1"], cwd=REPO, env=env,
            stdout=terminal, stderr=subprocess.STDOUT)
        servers.append((process, terminal))
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                    return url
            except OSError:
                time.sleep(0.5)
        pytest.fail("streamlit did not start")

    yield start
    for process, terminal in servers:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # a loaded machine: once 10 s were too few
            process.kill()
            process.wait()
        terminal.close()


@pytest.fixture
def chromium():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("CI installs chromium and chromium-driver (.ci/run); they are missing")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


# The page's photo input, not the sidebar's (which takes a shared run's .zip).
PHOTO_INPUT = "//input[@type='file'][not(ancestor::*[@data-testid='stSidebar'])]"


def upload_and_read(browser, photo, captions):
    """Upload `photo` through the page's own file input; wait until every caption of `captions`
    is on the page. Returns the page's text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 120).until(lambda d: d.find_elements(By.XPATH, PHOTO_INPUT))
    browser.find_element(By.XPATH, PHOTO_INPUT).send_keys(str(photo))
    WebDriverWait(browser, 180).until(
        lambda d: all(c in d.find_element(By.TAG_NAME, "body").text for c in captions))
    time.sleep(1)  # let the image finish painting before a screenshot
    return browser.find_element(By.TAG_NAME, "body").text


def test_upload_in_a_real_browser(streamlit_server, chromium, models_dir, sample_root, tmp_path):
    """Upload through the page's own file input, read the caption off the page, keep a
    screenshot. A run whose folder name is Markdown and HTML, chosen by default (first by name),
    shows its name as the text it is: Chromium finds no link and no tag made of it."""
    from selenium.webdriver.common.by import By

    folder = tmp_path / "models"
    shutil.copytree(models_dir / "shapes-large", folder / "shapes-large")
    hostile = shutil.copytree(models_dir / "shapes-small",
                              folder / "[**click**](https:evil.example) <b>www.evil.example")
    photo = sorted((sample_root / "Images").iterdir())[3]
    chromium.get(streamlit_server(folder))
    page = upload_and_read(chromium, photo, [hostile.name, expected_caption(hostile, photo)])
    assert "it knows only coloured shapes" in page
    links = [a.get_attribute("href") for a in chromium.find_elements(By.TAG_NAME, "a")]
    assert not [link for link in links if "evil" in (link or "")], links
    assert not [e.text for tag in ("strong", "b")
                for e in chromium.find_elements(By.TAG_NAME, tag) if "evil" in e.text
                or "click" in e.text]
    assert chromium.save_screenshot(str(tmp_path / "app.png"))
    assert Image.open(tmp_path / "app.png").size[0] >= 1000
    terminal = (tmp_path / "terminal.txt").read_text()
    for noise in ("absl::InitializeLog", "cuInit", "cudart_stub", "oneDNN", "Inotify", "watchdog"):
        assert noise not in terminal, terminal[-3000:]


ENSEMBLE_COST = "each caption costs about as long as the 2 runs one after another"


def test_an_ensemble_chosen_in_a_real_browser(streamlit_server, chromium, models_dir, sample_root,
                                              tmp_path):
    """In Chromium: one run chosen by default, no ensemble offered; a second run added to the
    sidebar's choice, "As one ensemble" ticked, a photo uploaded: the page shows the cost and
    one caption, the two runs' Ensemble's."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    chromium.get(streamlit_server(models_dir))
    choice = '[data-testid="stSidebar"] [data-testid="stMultiSelect"] input'
    WebDriverWait(chromium, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, choice))
    tick = "//label[contains(., 'As one ensemble')]"
    assert not chromium.find_elements(By.XPATH, tick)  # one run chosen: nothing to join
    chromium.find_element(By.CSS_SELECTOR, choice).send_keys("shapes-small", Keys.ENTER,
                                                            Keys.ESCAPE)  # the list closed
    WebDriverWait(chromium, 60).until(lambda d: d.find_elements(By.XPATH, tick))
    chromium.find_element(By.XPATH, tick).click()
    photo = sorted((sample_root / "Images").iterdir())[1]
    runs = [models_dir / "shapes-large", models_dir / "shapes-small"]
    page = upload_and_read(chromium, photo, ["ensemble of shapes-large + shapes-small",
                                             expected_caption(runs, photo)])
    assert ENSEMBLE_COST in page.replace("\n", " ")
    assert chromium.save_screenshot(str(tmp_path / "ensemble.png"))


# Words a caption shares with any reference by grammar alone: they say nothing of the photo.
FUNCTION_WORDS = {"a", "an", "the", "in", "on", "of", "with", "and", "is", "are", "at", "to",
                  "for", "his", "her", "its", "their", "by", "from", "into", "while", "as", "it",
                  "up", "down", "near", "next", "front", "some", "one", "two", "three", "other"}


def test_the_shipped_run_captions_a_real_photo(streamlit_server, chromium, shared_flickr8k,
                                               tmp_path):
    """A fresh clone's page, offline, captions a real photo with the run in models/: the
    first Flickr8k dev photo (by name) of ../shared/flickr8k/Images, whose caption must share a
    content word with the photo's references. First, a public-domain photo that ships with
    matplotlib (Grace Hopper, US Navy): Flickr's photos are not ours to publish, so the README's
    screenshot (APP_SCREENSHOT=docs/app-pretrained.png) shows this one."""
    import matplotlib

    models = tmp_path / "models"
    shutil.copytree(SHIPPED_RUN, models / SHIPPED_RUN.name)
    chromium.get(streamlit_server(models))
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    page = upload_and_read(chromium, hopper, [expected_caption(SHIPPED_RUN, hopper)])
    for shot in [tmp_path / "app.png", *filter(None, [os.environ.get("APP_SCREENSHOT")])]:
        assert chromium.save_screenshot(str(shot))
    assert "efficientnet_lite0" in page and "CIDEr-D" in page  # what it is, how it scores

    dev = utils.read_split_file(shared_flickr8k / "Flickr_8k.devImages.txt")
    photo = min(shared_flickr8k / "Images" / n for n in dev
                if (shared_flickr8k / "Images" / n).is_file())
    caption = expected_caption(SHIPPED_RUN, photo)
    upload_and_read(chromium, photo, [caption])
    references = utils.read_captions(shared_flickr8k / "Flickr8k.token.txt").captions[photo.name]
    assert len(references) == 5
    shared = set(caption.split()) & set(utils.tokenize(" ".join(references))) - FUNCTION_WORDS
    assert shared, (photo.name, caption, references)


def test_a_lite2_run_captions_a_real_photo(streamlit_server, chromium, shared_runs, shared_flickr8k,
                                          tmp_path):
    """A run on EfficientNet-Lite2's features: the page reads a real photo at Lite2's 260 px
    through that network and writes the run's caption of it."""
    run = shutil.copytree(shared_runs["lite2"], tmp_path / "models" / shared_runs["lite2"].name)
    chromium.get(streamlit_server(run.parent))
    photo = sorted((shared_flickr8k / "Images").glob("*.jpg"))[0]
    page = upload_and_read(chromium, photo, [expected_caption(run, photo)])
    assert "efficientnet_lite2" in page


def test_a_broken_run_folder_does_not_take_the_page_down(monkeypatch, models_dir, sample_root,
                                                          tmp_path):
    shutil.copytree(models_dir / "shapes-small", tmp_path / "good")
    shutil.copytree(models_dir / "shapes-small", tmp_path / "no-training")
    config = utils.read_json(tmp_path / "no-training" / "config.json")
    del config["training"]
    utils.write_json(tmp_path / "no-training" / "config.json", config)
    shutil.copytree(models_dir / "shapes-small", tmp_path / "garbage-model")
    (tmp_path / "garbage-model" / utils.WEIGHTS_FILE).write_bytes(b"\x89HDF not an HDF5 file")
    at = app(monkeypatch, tmp_path)
    at.sidebar.multiselect[0].set_value(["garbage-model", "good", "no-training"]).run()
    photo = sorted((sample_root / "Images").iterdir())[1]
    at.file_uploader[0].set_value([(photo.name, photo.read_bytes(), "image/jpeg")]).run()
    assert not at.exception
    errors = shown(at.error)
    assert any(e.startswith("Run no-training: cannot read its record (RunConfigError: ") and
               "missing field 'training'" in e for e in errors)
    assert any(e.startswith("Run garbage-model cannot caption new photos (") for e in errors)
    assert captions(at) == [expected_caption(tmp_path / "good", photo)]


def test_an_attention_run_shows_where_it_looked(monkeypatch, sample_grid_training, sample_root,
                                                tmp_path):
    """A run of the attention model captions as the others do, and below its caption, in an
    expander, draws each word's attention map over the photo."""
    run = train_sample_run(tmp_path / "models" / "shapes-attention", sample_grid_training,
                           epochs=2, architecture="attention")
    at = app(monkeypatch, tmp_path / "models")
    photo = sorted((sample_root / "Images").iterdir())[0]
    at.file_uploader[0].upload(photo.name, photo.read_bytes(), "image/png").run()
    assert not at.exception and not at.error
    assert captions(at) == [expected_caption(run, photo)]
    assert [e.label for e in at.main.expander] == ["Where it looked, word by word"]
    assert len(at.main.expander[0].get("image")) == 1  # the figure of the word-by-word maps


def test_a_shared_run_is_added_from_its_address(monkeypatch, models_dir, sample_root, server,
                                                tmp_path):
    """An archive made by utils.export_run, served by a loopback server the operator admits:
    added with its checksum, it captions like the run it was made from; a damaged one is refused
    by name and adds nothing."""
    archive = utils.export_run(models_dir / "shapes-small", tmp_path / "shared.zip")
    server.files["shared.zip"] = archive.read_bytes()
    server.files["damaged.zip"] = archive.read_bytes()[:-100]
    folder = tmp_path / "models"
    shutil.copytree(models_dir / "shapes-large", folder / "shapes-large")
    monkeypatch.setenv("CAPTIONING_ALLOW_NETWORKS", "127.0.0.0/8")
    at = app(monkeypatch, folder)
    at.sidebar.text_input(key="run_address").set_value(server.url + "damaged.zip")
    at.sidebar.button(key="add_run").click().run()
    assert at.error[0].value.startswith(f"{server.url}damaged.zip: not a whole zip archive")
    assert sorted(p.name for p in folder.iterdir()) == ["shapes-large"]
    at.sidebar.text_input(key="run_address").set_value(server.url + "shared.zip")
    at.sidebar.text_input(key="run_sha256").set_value(hashlib.sha256(
        archive.read_bytes()).hexdigest())
    at.sidebar.button(key="add_run").click().run()
    assert shown(at.success) == ["Added the run shapes-small: choose it above."]
    at = app(monkeypatch, folder)
    assert "shapes-small" in at.sidebar.multiselect[0].options
    at.sidebar.multiselect[0].set_value(["shapes-small"]).run()
    photo = sorted((sample_root / "Images").iterdir())[1]
    at.main.file_uploader[0].upload(photo.name, photo.read_bytes(), "image/png").run()
    assert captions(at) == [expected_caption(models_dir / "shapes-small",
                                                                photo)]
