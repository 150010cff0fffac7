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
for a page on a closed network. Whether visitors may add a shared run, which then lies in the
runs folder for every later visitor until the operator removes it, is the operator's choice:
`CAPTIONING_RUN_UPLOADS` "on" or "off"; unset, on for a page served to this machine alone
(.streamlit/config.toml's `server.address`, localhost) and off for any other. Captions, run names
and what a run's record says are shown as plain text, never rendered as Markdown.
"""
import dataclasses
import html
import io
import os
import re
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import streamlit as st
from PIL import Image

import utils

utils.hide_tensorflow_startup_lines()  # from the server's terminal (see utils/startup.py)

MODELS_DIR = Path(os.environ.get("CAPTIONING_MODELS_DIR", "models"))
DEFAULT = utils.DEFAULT_DECODING  # notebook 05's too: the best measured on Flickr8k's dev split
ALLOW_NETWORKS = "CAPTIONING_ALLOW_NETWORKS"  # private networks a visitor's address may reach
RUN_UPLOADS = "CAPTIONING_RUN_UPLOADS"  # "on" or "off": whether visitors may add shared runs
LOOPBACK = ("localhost", "127.0.0.1", "::1")  # server addresses that serve this machine alone
# Every ASCII punctuation mark, each of which CommonMark lets a backslash make literal.
MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
# How a caption and a run's name look (`show_text`): a caption as large as a subheader.
TEXT_STYLES = {"caption": "font-size: 1.5rem; font-weight: 600; line-height: 1.3",
               "run": "font-weight: 600", "about": ""}


def plain(text):
    """`text` inside a message (Markdown) with its Markdown made literal: a run's name in an
    error is not rendered as a link or emphasis."""
    return MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def show_text(container, text, kind):
    """Words others wrote (a caption, a shared run's name and record) as the text they are:
    escaped HTML, which nothing reads as Markdown, a link or a tag. `kind`: a TEXT_STYLES key,
    also the element's class."""
    container.html(f'<div class="{kind}" style="{TEXT_STYLES[kind]}">{html.escape(text)}</div>')


def fetch_policy():
    """What a visitor's address may reach: the server's own network is off limits unless the
    operator admits it; a mistyped network stops the page at once, not at every fetch."""
    allowed = [n for n in os.environ.get(ALLOW_NETWORKS, "").split(",") if n.strip()]
    try:
        return dataclasses.replace(utils.PUBLIC, allowed_networks=tuple(allowed))
    except ValueError as e:
        st.error(f"{ALLOW_NETWORKS}: {e}. Correct it and start the app again.")
        st.stop()


def run_uploads_allowed():
    """Whether this page may add runs shared by its visitors, as the operator set it; by
    default only where the server answers this machine alone."""
    setting = os.environ.get(RUN_UPLOADS, "").strip().lower()
    if setting not in ("", "on", "off"):
        st.error(f"{RUN_UPLOADS}: {setting!r} is neither on nor off. Correct it and start the "
                 "app again.")
        st.stop()
    return setting == "on" or (not setting and st.get_option("server.address") in LOOPBACK)


def find_runs(models_dir):
    """Run folders holding a trained model, by name (hidden folders are imports under way)."""
    if not models_dir.is_dir():
        return []
    return sorted(p.name for p in models_dir.iterdir()
                  if utils.is_trained(p) and not p.name.startswith("."))


def real_runs(runs):
    """The runs trained on real photos, not on the synthetic sample (nor unreadable)."""
    def dataset(name):
        try:
            return utils.read_run(MODELS_DIR / name)[1].dataset
        except Exception:  # a broken folder is reported where it is chosen
            return None
    return [name for name in runs if dataset(name) not in ("sample", None)]


def sample_warning(real):
    """What a sample run's caption needs beside it, and where to go for real photos."""
    return utils.SAMPLE_RUN_WARNING + (
        f" For real photos, choose {plain(real[0])} in the sidebar." if real else
        " For real photos, train on Flickr8k: `make run DATASET=flickr8k`.")


def scores_table(rows):
    """(table, note) of a run's scores, narrow enough for the sidebar: a row a decoding, named
    by its width alone ("beam 5"), its other rules and the splits said in the note below."""
    frame = pd.DataFrame(rows)
    width, rules = frame["decoding"].str.partition(", ")[[0, 2]].T.values
    several = frame["split"].nunique() > 1
    frame.index = [f"{w} ({s})" if several else w for w, s in zip(width, frame["split"])]
    grouped = {}
    for w, rule in zip(width, rules):
        if rule and w not in grouped.setdefault(rule, []):
            grouped[rule].append(w)
    note = (f"COCO evaluation on the {', '.join(frame['split'].unique())} "
            f"split{'s' if several else ''}. "
            + "; ".join(f"{', '.join(ws)}: {rule}" for rule, ws in grouped.items()))
    return frame[["BLEU-4", "METEOR", "CIDEr-D"]].map(
        lambda v: "" if pd.isna(v) else f"{v:.3f}"), note


def show_run(name, real):
    """A run in the sidebar: what it is, and its scores as a small table."""
    try:
        summary = utils.describe_run(MODELS_DIR / name)
    except Exception as e:  # a broken folder must not take the page down with it
        st.error(f"Run {plain(name)}: cannot read its record ({type(e).__name__}: {plain(str(e))})")
        return
    show_text(st, summary.name, "run")
    show_text(st, summary.about, "about")
    if summary.sample:
        st.warning(sample_warning(real))
    if summary.scores:  # a static table: it reads as text, and fits the narrow sidebar
        table, note = scores_table(summary.scores)
        st.table(table, border="horizontal")
        st.caption(plain(note))
    if summary.note:
        st.caption(plain(summary.note))


@st.cache_resource(show_spinner="Loading the run: model, vocabulary and encoder...")
def load_captioner(run_or_runs):
    """A run's `utils.Captioner` (a tuple of runs: their ensemble's), built once and shared by
    every request."""
    captioner = utils.Captioner.from_run(run_or_runs)
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
            st.error(str(e))  # names the visitor's own archive or address
            return
        st.success(f"Added the run {plain(run.name)}: choose it above.")


def as_file(name, data):
    """An in-memory file that errors name by the image's own name."""
    buffer = io.BytesIO(data)
    buffer.name = name
    return buffer


def main():
    st.set_page_config(page_title="Image captioning", layout="wide")
    st.title("Image captioning")
    policy = fetch_policy()
    uploads = run_uploads_allowed()
    if uploads:
        add_shared_run(policy)
    runs = find_runs(MODELS_DIR)
    if not runs:
        st.warning(f"No trained run in `{MODELS_DIR}/`. `make run` trains one on the sample "
                   "dataset in a few minutes, offline; `make run DATASET=flickr8k` trains one on "
                   "Flickr8k. Then reload this page."
                   + (" Or add a shared run in the sidebar." if uploads else ""))
        st.stop()
    real = real_runs(runs)

    with st.sidebar:  # by default one run, trained on real photos where there is one
        chosen = st.multiselect("Runs (side by side)", runs, default=real[:1] or runs[:1])
        together = len(chosen) > 1 and st.checkbox("As one ensemble", key="ensemble")
        if together:
            st.caption(f"One caption from all {len(chosen)} runs: their next-word probabilities "
                       f"averaged at every word, so each caption costs about as long as the "
                       f"{len(chosen)} runs one after another (the time is shown under it). "
                       "Usually better captions than any one of them; they must share a "
                       "vocabulary.")
        method = st.radio("Decoding", ["beam search", "greedy"])
        width = st.slider("Beam width", 2, 10, DEFAULT.beam_width) if method == "beam search" else 1
        penalty = st.slider("Length penalty (0: total log-probability; 1: per word)", 0.0, 2.0,
                            DEFAULT.length_penalty, 0.25) if method == "beam search" else 0.0
        no_repeat = DEFAULT.no_repeat_ngram if st.checkbox(
            f"No {DEFAULT.no_repeat_ngram} words in a row twice in a caption", value=True,
            key="no_repeat") else 0
        setting = utils.DecodingSetting(width, penalty, no_repeat)
        for name in chosen:
            show_run(name, real)

    uploads = st.file_uploader("Photos", accept_multiple_files=True)
    url = st.text_input(f"...or the address of an image on the web (at most "
                        f"{policy.max_bytes >> 20} MB)")
    if not chosen:
        st.info("Choose at least one run in the sidebar.")
        return

    if together:  # one captioner of all the chosen runs
        wanted = {f"ensemble of {' + '.join(chosen)}": tuple(str(MODELS_DIR / n) for n in chosen)}
    else:
        wanted = {name: str(MODELS_DIR / name) for name in chosen}
    captioners = {}
    for name, run_or_runs in wanted.items():
        try:
            captioners[name] = load_captioner(run_or_runs)
        except utils.NoEncoderError as e:  # not broken: made for other work
            st.info(f"Run {plain(name)}: {plain(str(e))}")
        except Exception as e:  # any failure of one run's files; the other runs still caption
            st.error(f"Run {plain(name)} cannot caption new photos ({type(e).__name__}: "
                     f"{plain(str(e))})")

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
            st.error(str(e))  # a visitor's own file, shown to that visitor alone
            continue
        picture, *columns = st.columns([1] + [1] * max(len(captioners), 1))
        picture.image(preview, caption=image_name)
        for column, (run, captioner) in zip(columns, captioners.items()):
            start = time.perf_counter()
            caption = utils.caption_image(captioner, decoded, setting)
            show_text(column, run, "run")
            show_text(column, caption.shown, "caption")
            column.caption(f"{setting.label}; {1000 * (time.perf_counter() - start):.0f} ms")
            if captioner.config.dataset == "sample":
                column.warning(sample_warning(real))
            if caption.maps is not None:  # an attention run also says where it looked
                with column.expander("Where it looked, word by word"):
                    # drawn about as wide as the column shows it, so its words stay readable
                    figure = utils.attention_figure(utils.preview_image(decoded, 256), caption,
                                                    columns=3, width=3.6)
                    st.pyplot(figure)
                    plt.close(figure)


main()
