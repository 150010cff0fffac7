"""Caption your own photos in the browser:  streamlit run app.py

Upload photos (or give a URL), choose one or more trained runs from models/ and a decoding, and
read each run's caption beside each photo (for an attention run, with where it looked for each
word). A run is loaded once (model, vocabulary and the encoder
that made its training features) and kept for every later request; each photo goes through that
encoder with the same `utils.load_image` and the encoder's own `preprocess` (its `EncoderSpec`)
as the training features.
`CAPTIONING_MODELS_DIR` points the app at another folder of runs. An image address is fetched
with `utils.PUBLIC`: public addresses only, at most 20 MB, within 20 s for the whole exchange;
`CAPTIONING_ALLOW_NETWORKS` (comma-separated, e.g. "10.0.0.0/8") admits private networks too,
for a page on a closed network.
"""
import dataclasses
import io
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import streamlit as st
from PIL import Image

import utils

utils.hide_tensorflow_startup_lines()  # from the server's terminal (see utils/startup.py)

MODELS_DIR = Path(os.environ.get("CAPTIONING_MODELS_DIR", "models"))
DEFAULT = utils.DEFAULT_DECODING  # notebook 05's too: the best measured on Flickr8k's dev split
ALLOW_NETWORKS = "CAPTIONING_ALLOW_NETWORKS"  # private networks a visitor's address may reach


def fetch_policy():
    """What a visitor's address may reach: the server's own network is off limits unless the
    operator admits it; a mistyped network stops the page at once, not at every fetch."""
    allowed = [n for n in os.environ.get(ALLOW_NETWORKS, "").split(",") if n.strip()]
    try:
        return dataclasses.replace(utils.PUBLIC, allowed_networks=tuple(allowed))
    except ValueError as e:
        st.error(f"{ALLOW_NETWORKS}: {e}. Correct it and start the app again.")
        st.stop()


def find_runs(models_dir):
    """Run folders holding a trained model, by name."""
    if not models_dir.is_dir():
        return []
    return sorted(p.name for p in models_dir.iterdir() if utils.is_trained(p))


@st.cache_resource(show_spinner="Loading the run: model, vocabulary and encoder...")
def load_captioner(run_dir):
    """A run's `utils.Captioner`, built once per run folder and shared by every request."""
    captioner = utils.Captioner.from_run(run_dir)
    # A first caption traces the encoder and the decoding step: the user's first photo is then
    # as quick as every later one.
    blank = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(blank, "PNG")
    utils.caption_image(captioner, blank, DEFAULT)
    return captioner


@st.cache_data(max_entries=8, show_spinner="Downloading the image...")
def fetch_image(url, _policy):
    """The bytes at `url` (the last few kept for later requests, at most 8 x 20 MB; a failure is
    not kept, so it is retried)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / utils.safe_file_name(url)
        return utils.download_file(url, path, policy=_policy).read_bytes()


def add_shared_run(policy):
    """The sidebar's form that adds a run shared as one file (`utils.export_run`): fetched from an
    address with the page's network rules and a run's size cap, or uploaded; checked, then
    unpacked into the runs folder (`utils.import_run`)."""
    with st.sidebar.expander("Add a shared run (one .zip file)"):
        address = st.text_input("Its address (https://...)", key="run_address")
        checksum = st.text_input("Its SHA-256 (optional)", key="run_sha256")
        upload = st.file_uploader("...or the file itself", type=["zip"], key="run_file")
        if not st.button("Add the run", key="add_run") or not (address.strip() or upload):
            return
        try:
            if upload:
                with tempfile.TemporaryDirectory() as folder:
                    path = Path(folder) / utils.safe_file_name(upload.name, "run.zip")
                    path.write_bytes(upload.getvalue())
                    run = utils.import_run(path, MODELS_DIR, sha256=checksum.strip() or None)
            else:
                run = utils.import_run(address.strip(), MODELS_DIR, sha256=checksum.strip() or None,
                                       policy=dataclasses.replace(
                                           utils.RUN_FETCH,
                                           allowed_networks=policy.allowed_networks))
        except utils.ArchiveError as e:
            st.error(str(e))
            return
        st.success(f"Added the run {run.name}: choose it above.")


def as_file(name, data):
    """An in-memory file that errors name by the image's own name."""
    buffer = io.BytesIO(data)
    buffer.name = name
    return buffer


def main():
    st.set_page_config(page_title="Image captioning", layout="wide")
    st.title("Image captioning")
    policy = fetch_policy()
    add_shared_run(policy)
    runs = find_runs(MODELS_DIR)
    if not runs:
        st.warning(f"No trained run in `{MODELS_DIR}/`. `make run` trains one on the sample "
                   "dataset in a few minutes, offline; `make run DATASET=flickr8k` trains one on "
                   "Flickr8k. Then reload this page. Or add a shared run in the sidebar.")
        st.stop()

    with st.sidebar:
        chosen = st.multiselect("Runs (side by side)", runs, default=runs[:2])
        method = st.radio("Decoding", ["beam search", "greedy"])
        width = st.slider("Beam width", 2, 10, DEFAULT.beam_width) if method == "beam search" else 1
        penalty = st.slider("Length penalty (0: total log-probability; 1: per word)", 0.0, 2.0,
                            DEFAULT.length_penalty, 0.25) if method == "beam search" else 0.0
        no_repeat = DEFAULT.no_repeat_ngram if st.checkbox(
            f"No {DEFAULT.no_repeat_ngram} words in a row twice in a caption", value=True) else 0
        setting = utils.DecodingSetting(width, penalty, no_repeat)
        for name in chosen:
            try:
                st.markdown(utils.describe_run(MODELS_DIR / name))
            except Exception as e:  # a broken folder must not take the page down with it
                st.error(f"Run {name}: cannot read its record ({type(e).__name__}: {e})")

    uploads = st.file_uploader("Photos", accept_multiple_files=True)
    url = st.text_input(f"...or the address of an image on the web (at most "
                        f"{policy.max_bytes >> 20} MB)")
    if not chosen:
        st.info("Choose at least one run in the sidebar.")
        return

    captioners = {}
    for name in chosen:
        try:
            captioners[name] = load_captioner(str(MODELS_DIR / name))
        except utils.NoEncoderError as e:  # not broken: made for other work
            st.info(f"Run {name}: {e}")
        except Exception as e:  # any failure of one run's files; the other runs still caption
            st.error(f"Run {name} cannot caption new photos ({type(e).__name__}: {e})")

    images = [(u.name, u.getvalue()) for u in uploads or []]
    if url.strip():
        try:
            images.append((url.strip(), fetch_image(url.strip(), policy)))
        except utils.DownloadError as e:
            st.error(f"{url.strip()}: could not fetch the image ({e.reason}). Check the address "
                     "in your browser, or save the photo and upload it above.")
    for image_name, data in images:
        try:
            decoded = utils.decode_image(as_file(image_name, data))  # once, for every run
            preview = utils.preview_image(decoded, 384)
        except utils.ImageError as e:
            st.error(str(e))
            continue
        picture, *columns = st.columns([1] + [1] * max(len(captioners), 1))
        picture.image(preview, caption=image_name)
        for column, (run, captioner) in zip(columns, captioners.items()):
            start = time.perf_counter()
            caption = utils.caption_image(captioner, decoded, setting)
            column.markdown(f"**{run}**")
            column.subheader(caption.text)
            column.caption(f"{setting.label}; {1000 * (time.perf_counter() - start):.0f} ms")
            if captioner.config.dataset == "sample":
                column.warning(utils.SAMPLE_RUN_WARNING)
            if caption.maps is not None:  # an attention run also says where it looked
                with column.expander("Where it looked, word by word"):
                    # drawn about as wide as the column shows it, so its words stay readable
                    figure = utils.attention_figure(utils.preview_image(decoded, 256), caption,
                                                    columns=3, width=3.6)
                    st.pyplot(figure)
                    plt.close(figure)


main()
