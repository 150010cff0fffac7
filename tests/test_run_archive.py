"""A run in one file (utils/run_archive.py): exported and imported bit for bit, from a path or
over HTTP (a loopback server), and a damaged, oversized or unsafe archive refused by name."""
import dataclasses
import hashlib
import json
import zipfile

import pytest

import utils
from conftest import Server, train_sample_run


@pytest.fixture(scope="module")
def run_dir(sample_training, tmp_path_factory):
    return train_sample_run(tmp_path_factory.mktemp("models") / "shapes", sample_training,
                            epochs=2)


@pytest.fixture(scope="module")
def archive(run_dir, tmp_path_factory):
    return utils.export_run(run_dir, tmp_path_factory.mktemp("shared") / "shapes.zip")


def test_an_exported_run_comes_back_bit_for_bit(run_dir, archive, tmp_path):
    imported = utils.import_run(archive, tmp_path / "models")
    assert imported == tmp_path / "models" / "shapes"
    shared = sorted(p.name for p in imported.iterdir())
    assert {"config.json", "vocabulary.json", "model.weights.h5", "history.json"} <= set(shared)
    assert "captions" not in shared and "backup" not in shared  # what a run needs, no more
    for name in shared:
        assert (imported / name).read_bytes() == (run_dir / name).read_bytes(), name
    again = utils.export_run(imported, tmp_path / "again.zip")
    assert again.read_bytes() == archive.read_bytes()  # the same files, the same archive
    model, vocab, _ = utils.load_run(imported)
    assert model.count_params() > 0 and len(vocab) > 4
    assert utils.import_run(archive, tmp_path / "models") == imported  # the same run: kept


def test_a_run_is_fetched_from_an_address_with_its_checksum(archive, tmp_path):
    data = archive.read_bytes()
    server = Server({"runs/shapes.zip": data})
    loopback = dataclasses.replace(utils.RUN_FETCH, allowed_networks=("127.0.0.0/8",))
    try:
        url = server.url + "runs/shapes.zip"
        with pytest.raises(utils.ArchiveError, match="refused"):  # the default: public only
            utils.import_run(url, tmp_path / "a")
        with pytest.raises(utils.ArchiveError, match="checksum"):
            utils.import_run(url, tmp_path / "b", sha256="0" * 64, policy=loopback)
        run = utils.import_run(url, tmp_path / "c", sha256=hashlib.sha256(data).hexdigest(),
                               policy=loopback)
    finally:
        server.close()
    assert (run / "model.weights.h5").is_file()
    assert not list((tmp_path / "b").iterdir())  # a refused archive leaves nothing behind


def rewritten(archive, path, change):
    """A copy of `archive` whose members `change` (a function of {name: bytes}) rewrites."""
    with zipfile.ZipFile(archive) as source:
        members = {name: source.read(name) for name in source.namelist()}
    with zipfile.ZipFile(path, "w") as target:
        for name, data in change(members).items():
            target.writestr(name, data)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda m: m | {"model.weights.h5": m["model.weights.h5"][:-1] + b"x"},
     "model.weights.h5 is damaged"),
    (lambda m: m | {"../outside.json": b"{}"}, "member '../outside.json' is not a file at the"),
    (lambda m: m | {"evil.pkl": b"cos\nsystem\n"}, "member 'evil.pkl' is not a file of a run"),
    (lambda m: {k: v for k, v in m.items() if k != "manifest.json"}, "no manifest.json"),
    (lambda m: {k: v for k, v in m.items() if k != "vocabulary.json"}, "are not the ones its"),
], ids=["damaged", "escaping", "pickle", "no manifest", "missing file"])
def test_a_bad_archive_is_refused_by_name(archive, tmp_path, change, message):
    bad = rewritten(archive, tmp_path / "bad.zip", change)
    with pytest.raises(utils.ArchiveError, match=message) as refused:
        utils.import_run(bad, tmp_path / "models")
    assert str(bad) in str(refused.value)
    assert not list((tmp_path / "models").iterdir())


def test_a_link_or_a_cut_archive_is_refused(archive, tmp_path):
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as target:
        info = zipfile.ZipInfo("config.json")
        info.external_attr = 0o120777 << 16  # a symbolic link
        target.writestr(info, "/etc/passwd")
    with pytest.raises(utils.ArchiveError, match="not a file at the archive's top level"):
        utils.import_run(link, tmp_path / "models")
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[:len(archive.read_bytes()) // 2])
    with pytest.raises(utils.ArchiveError, match="not a whole zip archive"):
        utils.import_run(cut, tmp_path / "models")


def test_an_archive_too_large_once_extracted_is_refused_before_it_is_read(tmp_path):
    """A zip bomb: a few hundred kilobytes that would be more than MAX_RUN_BYTES unpacked."""
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target, \
            target.open("model.weights.h5", "w", force_zip64=True) as member:
        block = bytes(16 << 20)
        for _ in range((utils.run_archive.MAX_RUN_BYTES >> 24) + 1):
            member.write(block)
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(utils.ArchiveError, match="MB once extracted"):
        utils.import_run(bomb, tmp_path / "models")


def test_a_run_that_does_not_load_is_refused(archive, tmp_path):
    """Whole, listed and with matching digests, but its vocabulary is not the one its record
    names: refused, as `load_run` refuses it."""
    def another_vocabulary(members):
        vocabulary = json.loads(members["vocabulary.json"])
        vocabulary["words"] = vocabulary["words"][:-1]
        data = json.dumps(vocabulary).encode()
        manifest = json.loads(members["manifest.json"])
        manifest["files"]["vocabulary.json"] = {"bytes": len(data),
                                                "sha256": hashlib.sha256(data).hexdigest()}
        return members | {"vocabulary.json": data, "manifest.json": json.dumps(manifest).encode()}

    bad = rewritten(archive, tmp_path / "bad.zip", another_vocabulary)
    with pytest.raises(utils.ArchiveError, match="not a run that loads .*not the vocabulary"):
        utils.import_run(bad, tmp_path / "models")


def test_a_run_shared_to_caption_with_leaves_the_optimizer_out(run_dir, tmp_path):
    """Without its training state the weights file shrinks, and the run captions exactly as
    before."""
    slim = utils.export_run(run_dir, tmp_path / "slim.zip", training_state=False)
    imported = utils.import_run(slim, tmp_path / "models")
    assert (imported / "model.weights.h5").stat().st_size < (
        0.6 * (run_dir / "model.weights.h5").stat().st_size)
    (full, _, _), (light, _, _) = utils.load_run(run_dir), utils.load_run(imported)
    for a, b in zip(full.weights, light.weights, strict=True):
        assert a.path == b.path and (a.numpy() == b.numpy()).all(), a.path
