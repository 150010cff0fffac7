"""Stage 3: every GloVe source, OOV handling, the vocabulary check, malformed files."""
import zipfile

import numpy as np
import pytest

import utils
from conftest import Server

VOCAB = utils.Vocabulary([*utils.SPECIAL_TOKENS, "dog", "cat", "zzyzx"], 5)


def glove_text(dim, words=("the", "dog", "cat", "ran")):
    rng = np.random.default_rng(dim)
    return "".join(f"{w} " + " ".join(f"{x:.5f}" for x in rng.normal(0, 0.4, dim)) + "\n"
                   for w in words)


def test_text_file_keeps_only_wanted_words(tmp_path):
    path = tmp_path / "glove.6B.50d.txt"
    path.write_text(glove_text(50))
    vectors, problems, source = utils.load_glove(VOCAB.words, str(path), 50)
    assert sorted(vectors) == ["cat", "dog"] and problems == [] and source == str(path)
    expected = [float(x) for x in glove_text(50).splitlines()[1].split()[1:]]
    assert np.allclose(vectors["dog"], expected)


def test_word2vec_header_and_zip(tmp_path):
    text = glove_text(100)
    (tmp_path / "w2v.txt").write_text("4 100\n" + text)
    with zipfile.ZipFile(tmp_path / "glove.6B.zip", "w") as archive:
        archive.writestr("glove.6B.100d.txt", text)
        archive.writestr("glove.6B.50d.txt", glove_text(50))
    from_w2v, _, _ = utils.load_glove(VOCAB.words, str(tmp_path / "w2v.txt"), 100)
    from_zip, _, source = utils.load_glove(VOCAB.words, "auto", 100, glove_dir=tmp_path)
    assert source == str(tmp_path / "glove.6B.zip")
    assert all(np.array_equal(from_w2v[w], from_zip[w]) for w in ("dog", "cat"))
    with pytest.raises(utils.GloveFileError, match="no glove.6B.200d.txt inside"):
        utils.load_glove(VOCAB.words, str(tmp_path / "glove.6B.zip"), 200)


def test_auto_prefers_a_local_text_file_then_the_package(tmp_path):
    assert utils.find_glove_source(50, tmp_path) == "pypi"
    assert utils.find_glove_source(200, tmp_path) == "download"
    (tmp_path / "glove.6B.50d.txt").write_text(glove_text(50))
    assert utils.find_glove_source(50, tmp_path) == str(tmp_path / "glove.6B.50d.txt")


def test_the_pypi_package_holds_real_glove():
    vocab = utils.Vocabulary([*utils.SPECIAL_TOKENS, "the", "dog", "cat", "puppy", "car"], 5)
    vectors, problems, source = utils.load_glove(vocab.words, "pypi", 50, glove_dir="/nonexistent")
    assert source == "pypi" and problems == [] and len(vectors) == 5
    # The first values of "the" in Stanford's glove.6B.50d.txt.
    assert np.allclose(vectors["the"][:5], [0.418, 0.24968, -0.41242, 0.1217, 0.34527])
    matrix = utils.embedding_matrix(vocab, vectors, 50)
    assert utils.nearest_words(matrix, vocab, "dog", k=2)[0][0] in ("cat", "puppy")
    with pytest.raises(ValueError, match="50d vectors only"):
        utils.load_glove(vocab.words, "pypi", 200)


def test_download_source(tmp_path):
    server = Server({"glove.6B.zip": b""})
    try:
        buffer = tmp_path / "served.zip"
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("glove.6B.50d.txt", glove_text(50))
        server.files["glove.6B.zip"] = buffer.read_bytes()
        vectors, _, source = utils.load_glove(VOCAB.words, "download", 50, glove_dir=tmp_path / "g",
                                              url=server.url + "glove.6B.zip")
        assert sorted(vectors) == ["cat", "dog"] and source == str(tmp_path / "g" / "glove.6B.zip")
    finally:
        server.close()


def test_embedding_matrix_rows():
    vectors = {"dog": np.full(4, 0.5, "float32"), "cat": np.full(4, -0.5, "float32")}
    matrix = utils.embedding_matrix(VOCAB, vectors, 4, seed=1)
    assert matrix.shape == (len(VOCAB), 4) and matrix.dtype == np.float32
    assert not matrix[0].any()  # padding
    assert np.array_equal(matrix[VOCAB.index["dog"]], vectors["dog"])
    oov = matrix[[VOCAB.unk_id, VOCAB.start_id, VOCAB.end_id, VOCAB.index["zzyzx"]]]
    assert np.all(np.abs(oov).sum(1) > 0) and len({tuple(r) for r in oov}) == 4
    assert np.array_equal(matrix, utils.embedding_matrix(VOCAB, vectors, 4, seed=1))
    zeros = utils.embedding_matrix(VOCAB, vectors, 4, oov="zeros")
    assert not zeros[VOCAB.index["zzyzx"]].any() and zeros[VOCAB.index["cat"]][0] == -0.5


def test_coverage_report():
    vectors = {"dog": np.zeros(4)}
    report = utils.coverage_report(VOCAB, vectors, ["dog dog dog cat", "zzyzx cat"])
    assert report["vocabulary_found"] == round(1 / 3, 4)
    assert report["tokens_covered"] == 0.5
    assert report["most_frequent_missing"] == ["cat", "zzyzx"]


def test_saved_matrix_refuses_another_vocabulary(tmp_path):
    matrix = utils.embedding_matrix(VOCAB, {}, 8)
    info = {"source": "test", "dim": 8, "oov": "random"}
    utils.save_embedding(tmp_path / "embedding.npy", matrix, VOCAB, info | {"coverage": {}})
    loaded, loaded_info = utils.load_embedding(tmp_path / "embedding.npy", VOCAB)
    assert np.array_equal(loaded, matrix) and loaded_info == info
    other = utils.Vocabulary([*utils.SPECIAL_TOKENS, "dog", "cat", "emu"], 5)
    with pytest.raises(ValueError, match="another vocabulary"):
        utils.load_embedding(tmp_path / "embedding.npy", other)
    with pytest.raises(FileNotFoundError, match="run notebooks/03_glove_embeddings.ipynb first"):
        utils.load_embedding(tmp_path / "missing.npy", VOCAB)


def test_malformed_lines_are_skipped_and_named(tmp_path):
    good = glove_text(4, ("the",))
    path = tmp_path / "bad.txt"
    path.write_bytes(good.encode() + b"dog 0.1 0.2 0.3\n" + b"caf\xe9 1 2 3 4\n" +
                     b"cat 0.1 x 0.3 0.4\n" + b"zzyzx 1 2 3 4\n")
    vectors, problems, _ = utils.load_glove(VOCAB.words, str(path), 4)
    assert list(vectors) == ["zzyzx"]
    assert problems == [f"{path}:2: 3 values, expected 4", f"{path}:3: word is not UTF-8",
                        f"{path}:4: a value is not a number"]
    assert utils.coverage_report(VOCAB, vectors, [], problems)["skipped_lines"] == problems


def test_dimension_mismatch_is_an_error(tmp_path):
    path = tmp_path / "glove.6B.100d.txt"
    path.write_text(glove_text(100))
    with pytest.raises(utils.GloveFileError, match=r"glove.6B.100d.txt:1: the file holds 100-d"):
        utils.load_glove(VOCAB.words, str(path), 200)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        utils.load_glove(VOCAB.words, str(tmp_path / "nope.txt"), 50)
