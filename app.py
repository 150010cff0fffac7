"""Caption your own photos in the browser:  streamlit run app.py

Upload photos (or give a URL), choose one or more trained runs from models/ and a decoding, and
read each run's caption beside each photo. A run is loaded once (model, vocabulary and the encoder
that made its training features) and kept for every later request; each photo goes through that
encoder with the same `utils.load_image` and `utils.preprocess` as the training features.
`CAPTIONING_MODELS_DIR` points the app at another folder of runs.
"""
import io
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import streamlit as st
from PIL import Image

import utils

MODELS_DIR = Path(os.environ.get("CAPTIONING_MODELS_DIR", "models"))
# Notebook 05's defaults, the best measured on Flickr8k's dev split (README).
BEAM_WIDTH, LENGTH_PENALTY, NO_REPEAT_NGRAM = 5, 1.0, 2


def find_runs(models_dir):
    """Run folders holding a finished model, by name."""
    if not models_dir.is_dir():
        return []
    return sorted(p.name for p in models_dir.iterdir() if (p / "model.keras").is_file())


@st.cache_resource(show_spinner="Loading the run: model, vocabulary and encoder...")
def load_captioner(run_dir):
    """(decoder, encoder, config) of a run, built once per run folder and shared by every request."""
    model, vocab, config = utils.load_run(run_dir)
    decoder, encoder = utils.CaptionDecoder(model, vocab), utils.encoder_for_run(config)
    # A first caption traces the encoder and the decoding step: the user's first photo is then
    # as quick as every later one.
    blank = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(blank, "PNG")
    utils.caption_image(decoder, encoder, config, blank, BEAM_WIDTH, LENGTH_PENALTY,
                        NO_REPEAT_NGRAM)
    return decoder, encoder, config


def describe_run(run_dir):
    """A run's dataset, encoder and test-split scores (from notebook 05's evaluation JSON)."""
    config = utils.read_json(run_dir / "config.json")
    lines = [f"**{run_dir.name}**: {config['dataset']} dataset, {config['encoder']} "
             f"({config['weights']} weights), {config['vocab_size']} words, trained on "
             f"{config['train']['images']} images"]
    evaluation = run_dir / "evaluation-test.json"
    if evaluation.is_file():
        scores = utils.read_json(evaluation)["scores"]
        lines += [f"{label} on the test split: BLEU-4 {scores[label]['bleu4']:.3f}, "
                  f"CIDEr-D {scores[label]['cider_d']:.2f}" for label in scores
                  if "shuffled" not in label]  # the control is for notebook 05
    else:
        lines.append("not evaluated yet: run notebook 05 for its test scores")
    return "  \n".join(lines)


@st.cache_data(max_entries=32, show_spinner="Downloading the image...")
def fetch_image(url):
    """The bytes at `url` (kept for later requests; a failure is not kept, so it is retried)."""
    with tempfile.TemporaryDirectory() as folder:
        name = Path(urlparse(url).path).name or "image"
        return utils.download_file(url, Path(folder) / name).read_bytes()


def as_file(name, data):
    """An in-memory file that errors name by the image's own name."""
    buffer = io.BytesIO(data)
    buffer.name = name
    return buffer


def main():
    st.set_page_config(page_title="Image captioning", layout="wide")
    st.title("Image captioning")
    runs = find_runs(MODELS_DIR)
    if not runs:
        st.warning(f"No trained run in `{MODELS_DIR}/`. `make run` trains one on the sample "
                   "dataset in a few minutes, offline; `make run DATASET=flickr8k` trains one on "
                   "Flickr8k. Then reload this page.")
        st.stop()

    with st.sidebar:
        chosen = st.multiselect("Runs (side by side)", runs, default=runs[:2])
        method = st.radio("Decoding", ["beam search", "greedy"])
        width = st.slider("Beam width", 2, 10, BEAM_WIDTH) if method == "beam search" else 1
        penalty = st.slider("Length penalty (0: total log-probability; 1: per word)", 0.0, 2.0,
                            LENGTH_PENALTY, 0.25) if method == "beam search" else 0.0
        no_repeat = NO_REPEAT_NGRAM if st.checkbox("No word pair twice in a caption",
                                                   value=True) else 0
        for name in chosen:
            st.markdown(describe_run(MODELS_DIR / name))

    uploads = st.file_uploader("Photos", accept_multiple_files=True)
    url = st.text_input("...or the address of an image on the web")
    if not chosen:
        st.info("Choose at least one run in the sidebar.")
        return

    captioners = {}
    for name in chosen:
        try:
            captioners[name] = load_captioner(str(MODELS_DIR / name))
        except (ValueError, OSError) as e:
            st.error(f"Run {name} cannot caption new photos: {e}")

    images = [(u.name, u.getvalue()) for u in uploads or []]
    if url.strip():
        try:
            images.append((url.strip(), fetch_image(url.strip())))
        except utils.DownloadError as e:
            st.error(str(e))
    for image_name, data in images:
        try:
            preview = utils.load_image(as_file(image_name, data), 384)
        except utils.ImageError as e:
            st.error(str(e))
            continue
        picture, *columns = st.columns([1] + [1] * max(len(captioners), 1))
        picture.image(preview / 255.0, caption=image_name)
        for column, (run, (decoder, encoder, config)) in zip(columns, captioners.items()):
            start = time.perf_counter()
            caption = utils.caption_image(decoder, encoder, config, as_file(image_name, data),
                                          width, penalty, no_repeat)
            column.markdown(f"**{run}**")
            column.subheader(caption)
            how = f"{method}, width {width}, length penalty {penalty:g}" if width > 1 else method
            column.caption(f"{how}; {1000 * (time.perf_counter() - start):.0f} ms")


main()
