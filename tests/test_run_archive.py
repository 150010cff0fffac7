"""A run in one file (utils/run_archive.py): exported and imported bit for bit, from a path or
over HTTP (a loopback server), and a damaged, oversized or unsafe archive refused by name."""
import dataclasses
import hashlib
import importlib.util
import io
import json
import zipfile

import pytest

import utils
from conftest import REPO, Server, model_kinds, split_kind, train_sample_run


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


def _benchmark(name):
    """A module of benchmarks/, which measures what the tests here check."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A copy of an archive whose members a change rewrites, its manifest made to match: what
# reaches the checks after the digests (the benchmark's hostile archives are made by it too).
repacked = _benchmark("hostile_archives").repacked


def json_changed(member, change):
    """A `repacked` change that rewrites one JSON member with `change` (of its parsed value)."""
    def rewrite(members):
        value = json.loads(members[member])
        return members | {member: json.dumps(change(value)).encode()}
    return rewrite


def with_field(path, value):
    """A record with the field `path` ("model.units") set to `value`."""
    def change(record):
        *outer, last = path.split(".")
        part = record
        for key in outer:
            part = part[key]
        part[last] = value
        return record
    return json_changed("config.json", change)


def empty_weights(shape):
    """A weights file of one dataset declaring `shape` floats and storing none of them."""
    import h5py

    data = io.BytesIO()
    with h5py.File(data, "w") as f:
        f.create_dataset("vars/0", shape, "float32")  # never written: no storage
    return lambda members: members | {"model.weights.h5": data.getvalue()}


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("change, message", [
    (with_field("model.units", 10 ** 9), "model.units is 1000000000, outside 1 to 1,024"),
    (with_field("model.units", 800), "weights file holds .* values: they do not belong"),
    (with_field("model.architecture", {"merge": 1}), "'model.architecture' should be str"),
    (with_field("model.architecture", "lstm9"), "unknown architecture 'lstm9'"),
    (with_field("model.units", True), "'model.units' should be int, not bool"),
    (json_changed("vocabulary.json", lambda v: v | {"words": [*v["words"][:-1], 7]}),
     r"word \d+ \('7'\) is not a word of letters"),
    (json_changed("vocabulary.json", lambda v: v | {"words": [*v["words"][:-1], ["a"]]}),
     r"word \d+ \(\"\['a'\]\"\) is not a word of letters"),
    (json_changed("vocabulary.json", lambda v: {"max_length": v["max_length"]}),
     "'words' is not a list"),
    (json_changed("vocabulary.json",
                  lambda v: v | {"words": [*v["words"][:-1], "[**click**](https://x.example)"]}),
     r"word \d+ \('\[\*\*click\*\*\]\(https://x.example\)'\) is not a word of letters"),
    (lambda m: m | {"config.json": DEEP.encode()}, "nested too deep"),
    (empty_weights((1 << 28,)), "vars/0 is not an array stored in full"),
], ids=["units 1e9", "units against weights", "architecture dict", "unknown architecture",
        "units bool", "word a number", "word a list", "no words", "word markdown", "deep JSON",
        "1 GiB declared"])
def test_a_hostile_record_is_refused_before_a_model_is_built(archive, tmp_path, change, message):
    """Each an ArchiveError naming the archive, with no path of this machine in it; none builds
    a model of the sizes it declares (the refusals come before `load_run`)."""
    bad = repacked(archive, tmp_path / "bad.zip", change)
    with pytest.raises(utils.ArchiveError, match=message) as refused:
        utils.import_run(bad, tmp_path / "models")
    assert str(refused.value).startswith(str(bad))
    assert ".import-" not in str(refused.value)  # the server's own folders stay unnamed
    assert not list((tmp_path / "models").iterdir())


def test_a_hostile_container_is_refused_before_it_is_read(archive, tmp_path):
    """Methods zipfile does not bound (bzip2, LZMA), an unknown method, an encrypted member, too
    many members, a manifest nested too deep or with an entry that is not an object."""
    for method, name in [(zipfile.ZIP_BZIP2, "method 12"), (zipfile.ZIP_LZMA, "method 14")]:
        bad = repacked(archive, tmp_path / f"{method}.zip", lambda m: m, compression=method)
        with pytest.raises(utils.ArchiveError, match=name):
            utils.import_run(bad, tmp_path / "models")
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as source:
        info = source.getinfo("config.json")
    central = _central_header(data, "config.json")
    for offset, value in [(8, 99), (6, 1)]:  # the method; the flags' "encrypted" bit
        patched = bytearray(data)
        patched[info.header_offset + offset] = value  # the local header, then the central one
        patched[central + offset + 2] = value
        bad = tmp_path / f"patched{offset}.zip"
        bad.write_bytes(bytes(patched))
        with pytest.raises(utils.ArchiveError, match="method 99|encrypted"):
            utils.import_run(bad, tmp_path / "models")
    many = repacked(archive, tmp_path / "many.zip", lambda m: m | {
        f"evaluation-{i}.json": b"{}" for i in range(utils.run_archive.MAX_MEMBERS)})
    with pytest.raises(utils.ArchiveError, match="members"):
        utils.import_run(many, tmp_path / "models")
    for manifest, message in [(DEEP, "nested too deep"), (None, "damaged")]:
        def change(members, manifest=manifest):
            listed = json.loads(members["manifest.json"])
            listed["files"]["config.json"] = "a string"
            return members | {"manifest.json": (manifest or json.dumps(listed)).encode()}
        bad = rewritten(archive, tmp_path / "manifest.zip", change)
        with pytest.raises(utils.ArchiveError, match=message):
            utils.import_run(bad, tmp_path / "models")
    assert not [p for p in (tmp_path / "models").iterdir()]


def _central_header(data, name):
    """Where the central directory's header of member `name` starts in a zip's bytes."""
    return next(i for i in range(len(data)) if data[i:i + 4] == b"PK\x01\x02"
                and data[i + 46:i + 46 + len(name)] == name.encode())


def test_an_import_again_keeps_the_run_and_clears_what_a_killed_import_left(archive, tmp_path):
    """Notebook 05 with RUN_ARCHIVE, run twice: the run's own evaluation, written between the
    two, does not make it another run. A folder a killed import left an hour ago is removed, one
    in use now is not; a run named like a file of the folder is refused, not crashed into."""
    import os
    import time

    models = tmp_path / "models"
    run = utils.import_run(archive, models)
    (run / "evaluation-test-greedy.json").write_text("{}")
    (run / "history.json").write_text("[]")  # not what the run is: its record and weights are
    assert utils.import_run(archive, models) == run
    left, busy = models / ".import-killed", models / ".import-busy"
    left.mkdir(), busy.mkdir()
    (left / "model.weights.h5").write_bytes(bytes(1000))
    hour_ago = time.time() - utils.run_archive.STALE_IMPORT_S - 60
    os.utime(left, (hour_ago, hour_ago))
    (models / "README.md").write_text("the operator's notes")
    named = repacked(archive, tmp_path / "named.zip", lambda m: m)
    with zipfile.ZipFile(named) as source:
        members = {name: source.read(name) for name in source.namelist()}
    manifest = json.loads(members["manifest.json"]) | {"run": "README.md"}
    readme = rewritten(named, tmp_path / "readme.zip",
                       lambda m: m | {"manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(utils.ArchiveError, match="README.md already holds a file"):
        utils.import_run(readme, models)
    assert not left.exists() and busy.exists()
    assert (models / "README.md").read_text() == "the operator's notes"


@pytest.mark.parametrize("kind", model_kinds())
def test_the_size_bound_holds_for_every_architecture(kind):
    """What an archive's record may describe is bounded by `_largest_parameters`: never fewer
    than the model has (a real run is never refused), at most four times as many (so a record
    cannot claim much more than its weights file stores)."""
    architecture, grid = split_kind(kind)
    for vocab, features, units, embedding in [(60, 24, 16, 8), (60, 24, 64, 50),
                                              (60, 24, 32, 100), (2532, 1280, 256, 50)]:
        config = utils.ModelConfig(vocab, features, architecture, embedding, units, heads=4,
                                   positions=49 if grid else None)
        built = utils.build_caption_model(config).count_params()
        largest = utils.run_archive._largest_parameters(config)
        assert built <= largest <= 4 * built, (units, embedding, built, largest)
