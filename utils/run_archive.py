"""A trained run in one file, to share: `export_run` writes a run folder's files into one zip with
a manifest of their sizes and SHA-256 digests; `import_run` reads one back, from a path or an
http(s) address, into a models folder, refusing what is not a run.

What a run needs later is its record, vocabulary and weights (and what shows how it did: its
history, its evaluations); its encoded captions and checkpoints are left out. An archive is
checked before anything is written: a member outside `RUN_FILES`, a folder, a link, a size over
the caps, a digest that does not match or a run that does not load is refused, the message naming
the archive. Nothing in it is a pickle: JSON and Keras weights files, loaded as every run is.

Whatever an archive declares, importing it costs bounded time and memory: at most MAX_MEMBERS
members, each stored or deflated (zipfile bounds neither bzip2's nor LZMA's output) and read
while its bytes are counted against the caps; a record whose model would be larger than
MAX_PARAMETERS, or larger than its weights file can hold, is refused before a model is built.
"""
import dataclasses
import fnmatch
import hashlib
import io
import json
import shutil
import stat
import tempfile
import time
import zipfile
from pathlib import Path

import h5py

from .download import PUBLIC, DownloadError, download_file, safe_file_name
from .files import atomic_path
from .runs import load_run, read_run
from .training import WEIGHTS_FILE

__all__ = ["RUN_FILES", "ARCHIVE_FORMAT", "RUN_FETCH", "ArchiveError", "export_run", "import_run"]

# What an archive may hold of a run folder (shell patterns), besides its manifest.
RUN_FILES = ("config.json", "vocabulary.json", "model.weights.h5", "history.json", "history.csv",
             "self_critical.json", "evaluation-*.json")
REQUIRED = ("config.json", "vocabulary.json", "model.weights.h5")
MANIFEST = "manifest.json"
ARCHIVE_FORMAT = 1
MAX_RUN_BYTES = 500 << 20  # all members together, uncompressed: a large Transformer is ~50 MB
MAX_JSON_BYTES = 32 << 20  # one JSON member: an evaluation of COCO's 5,000 test photos is ~3 MB
MAX_MEMBERS = 64           # a run folder's files, its evaluations included
METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # how export_run compresses, and no other
# The largest model an archive may describe (float32 values): five times the default Transformer
# on a COCO vocabulary; building it costs about 200 MB and a few seconds.
MAX_PARAMETERS = 50_000_000
# Parts of a model's record that say how large it is, and the most each may be in a shared run.
SIZE_CAPS = {"vocab_size": 100_000, "feature_dim": 8192, "embedding_dim": 1024, "units": 1024,
             "positions": 4096, "blocks": 24, "heads": 64, "memory_slots": 64}
# Imports under way unpack into hidden folders of this prefix (not runs: the app lists none);
# one older than this was left by an import that was killed, and the next import removes it.
IMPORT_PREFIX, STALE_IMPORT_S = ".import-", 3600
# How an archive is fetched from an address: public addresses only, as the app fetches photos,
# with room for a run's weights.
RUN_FETCH = dataclasses.replace(PUBLIC, max_bytes=MAX_RUN_BYTES, deadline_s=300)
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # every member's date: the same files, the same archive


class ArchiveError(ValueError):
    """An archive refused; the message names it and says why."""


def _digest(data):
    return hashlib.sha256(data).hexdigest()


def _shared_files(run_dir):
    """The run folder's files an archive carries, by name, sorted."""
    return sorted(p.name for p in Path(run_dir).iterdir()
                  if p.is_file() and any(fnmatch.fnmatch(p.name, f) for f in RUN_FILES))


def export_run(run_dir, path, training_state=True):
    """Write the run in `run_dir` (a trained one: it must load) into the zip `path`, atomically.
    The same files always give the same archive, byte for byte. With `training_state=False` the
    weights file keeps the model's weights alone, not the optimizer's moments that resuming needs:
    a third of the size, for a run shared to caption with. Returns `path`."""
    run_dir, path = Path(run_dir), Path(path)
    model = load_run(run_dir)[0]  # a run that does not load is not worth sharing
    names = _shared_files(run_dir)
    contents = {name: (run_dir / name).read_bytes() for name in names}
    if not training_state:
        contents[WEIGHTS_FILE] = _model_weights(model)
    manifest = {"format": ARCHIVE_FORMAT, "run": run_dir.name,
                "files": {name: {"bytes": len(data), "sha256": _digest(data)}
                          for name, data in contents.items()}}
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in [(MANIFEST, json.dumps(manifest, indent=1).encode()),
                           *contents.items()]:
            info = zipfile.ZipInfo(name, _FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return path


def import_run(source, models_dir, name=None, sha256=None, policy=RUN_FETCH):
    """The run in the archive `source` (a path, or an http(s) address fetched as `policy`
    allows, checked against `sha256` when given) unpacked into `models_dir/<name>` (its own name
    by default) and loaded once to prove it whole. Returns the run folder. A folder of that name
    holding other files is never replaced."""
    models_dir = Path(models_dir)
    _remove_stale_imports(_existing(models_dir))
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=IMPORT_PREFIX) as work:
        if str(source).startswith(("http://", "https://")):
            try:
                path = download_file(source, Path(work) / safe_file_name(source, "run.zip"),
                                     policy=policy, sha256=sha256)
            except DownloadError as e:
                raise ArchiveError(f"{source}: {e.reason}") from None
        else:
            path = Path(source)
            if sha256 and _digest(path.read_bytes()) != sha256.lower():
                raise ArchiveError(f"{path}: its SHA-256 is not the expected {sha256}")
        manifest, contents = _checked_contents(path, str(source))
        unpacked = Path(work) / "run"
        unpacked.mkdir()
        for member, data in contents.items():
            (unpacked / member).write_bytes(data)
        try:
            _check_sizes(read_run(unpacked)[1].model, contents[WEIGHTS_FILE])
            load_run(unpacked)
        except ArchiveError as e:
            raise ArchiveError(f"{source}: {e}") from None
        except Exception as e:  # whatever an untrusted archive breaks, said without our paths
            why = f"{type(e).__name__}: {e}".replace(str(unpacked), "the archive")
            raise ArchiveError(f"{source}: not a run that loads ({why})") from None
        target = models_dir / (name or safe_file_name(manifest["run"], "run"))
        if target.exists():
            if target.is_dir() and all((target / m).is_file() and (target / m).read_bytes()
                                       == contents[m] for m in REQUIRED):
                return target  # this very run, imported before (its evaluations may be newer)
            held = "another run" if target.is_dir() else "a file"
            raise ArchiveError(f"{target} already holds {held}: give the import another name, "
                               "or move it away")
        shutil.move(unpacked, target)
    return target


def _model_weights(model):
    """The bytes of a Keras weights file holding `model`'s weights alone (it is not compiled, so
    no optimizer is saved with it)."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_weights(Path(folder) / WEIGHTS_FILE)
        return (Path(folder) / WEIGHTS_FILE).read_bytes()


def _existing(folder):
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _remove_stale_imports(models_dir):
    """Remove what imports killed mid-way left in `models_dir` (an hour old or more)."""
    for left in models_dir.glob(IMPORT_PREFIX + "*"):
        if time.time() - left.stat().st_mtime > STALE_IMPORT_S:
            shutil.rmtree(left, ignore_errors=True)


def _check_sizes(model, weights):
    """Refuse a record whose model is too large to build here, or larger than its weights file
    (the bytes of `model.weights.h5`) can hold, before any model is built from it."""
    for field, cap in SIZE_CAPS.items():
        value = getattr(model, field)
        if value is not None and not 1 <= value <= cap:
            raise ArchiveError(f"its record's model.{field} is {value}, outside 1 to {cap:,}")
    largest = _largest_parameters(model)
    if largest > MAX_PARAMETERS:
        raise ArchiveError(f"its record describes a model of up to {largest:,} parameters, over "
                           f"the {MAX_PARAMETERS:,} a shared run may have")
    stored = _stored_values(weights)
    if largest > 8 * stored:
        raise ArchiveError(f"its record describes a model of up to {largest:,} parameters, its "
                           f"weights file holds {stored:,} values: they do not belong together")


def _largest_parameters(model):
    """More parameters than a model of `model`'s sizes has (and at most about four times as
    many): the words' embedding, input and output layers, the feature projections (an attention
    LSTM reads the features at every step), the recurrent cells or the Transformer's blocks."""
    units, grid = model.units, model.positions or 0
    blocks = 16 * model.blocks + 8 if model.architecture == "transformer" else 8
    return (model.vocab_size * (model.embedding_dim + units + 2) + 4 * units * model.embedding_dim
            + units * units * blocks + model.feature_dim * (units * (model.memory_slots + 4) + 2)
            + grid * units)


def _stored_values(weights):
    """How many numbers the weights file truly stores: a dataset whose declared size is not in
    the file (compressed, or never written) is refused, so the count bounds what loading costs."""
    count = 0

    def visit(name, item):
        nonlocal count
        if isinstance(item, h5py.Dataset):
            if item.dtype.kind not in "fiub" or item.id.get_storage_size() < item.nbytes:
                raise ArchiveError(f"{WEIGHTS_FILE}: {name} is not an array stored in full")
            count += item.size

    try:
        with h5py.File(io.BytesIO(weights), "r") as f:
            f.visititems(visit)
    except OSError as e:
        raise ArchiveError(f"{WEIGHTS_FILE} is not a weights file ({e})") from None
    return count


def _checked_contents(path, label):
    """(manifest, {member: bytes}) of a run archive, every check passed, or ArchiveError."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > MAX_MEMBERS:
                raise ArchiveError(f"{label}: refused, {len(members):,} members (a run archive "
                                   f"holds at most {MAX_MEMBERS})")
            total = sum(m.file_size for m in members)
            if total > MAX_RUN_BYTES:
                raise ArchiveError(f"{label}: refused, {total / 1e6:,.0f} MB once extracted (a "
                                   f"run archive holds at most {MAX_RUN_BYTES / 1e6:,.0f} MB)")
            for member in members:
                _check_member(member, label)
            names = [m.filename for m in members]
            if MANIFEST not in names or len(set(names)) != len(names):
                raise ArchiveError(f"{label}: no {MANIFEST}, or a member twice: not a run archive "
                                   "(export one with utils.export_run)")
            contents = {m.filename: _read_member(archive, m, label) for m in members}
    except zipfile.BadZipFile as e:
        raise ArchiveError(f"{label}: not a whole zip archive ({e})") from None
    except (zipfile.LargeZipFile, EOFError, OSError, RuntimeError, NotImplementedError) as e:
        raise ArchiveError(f"{label}: damaged ({e})") from None  # e.g. a bad CRC
    manifest = _manifest(contents.pop(MANIFEST), label)
    listed = manifest["files"]
    if sorted(listed) != sorted(contents):
        raise ArchiveError(f"{label}: its members ({', '.join(sorted(contents))}) are not the "
                           f"ones its manifest lists ({', '.join(sorted(listed))})")
    for member, data in contents.items():
        if not isinstance(listed[member], dict) or _digest(data) != listed[member].get("sha256"):
            raise ArchiveError(f"{label}: {member} is damaged (its SHA-256 is not the manifest's)")
    missing = [m for m in REQUIRED if m not in contents]
    if missing:
        raise ArchiveError(f"{label}: a run needs {', '.join(missing)}, which it lacks")
    return manifest, contents


def _read_member(archive, member, label):
    """A member's bytes, counted as they are decompressed: never more than its cap, whatever its
    header declares."""
    cap = MAX_JSON_BYTES if member.filename.endswith(".json") else MAX_RUN_BYTES
    with archive.open(member) as f:
        data = f.read(min(cap, member.file_size) + 1)
    if len(data) > min(cap, member.file_size):
        raise ArchiveError(f"{label}: refused, member {member.filename!r} holds more than "
                           f"{'its header declares' if len(data) <= cap else f'{cap >> 20} MB'}")
    return data


def _check_member(member, label):
    """A plain file of RUN_FILES, at the archive's top level, stored or deflated, unencrypted,
    within its cap: nothing else is read."""
    if member.compress_type not in METHODS or member.flag_bits & 0x1:
        raise ArchiveError(f"{label}: refused, member {member.filename!r} is "
                           + ("encrypted" if member.flag_bits & 0x1 else
                              f"compressed by method {member.compress_type}")
                           + " (run archives are stored or deflated, as export_run writes them)")
    if member.filename.endswith(".json") and member.file_size > MAX_JSON_BYTES:
        raise ArchiveError(f"{label}: refused, member {member.filename!r} is over "
                           f"{MAX_JSON_BYTES >> 20} MB")
    mode = member.external_attr >> 16
    if member.is_dir() or stat.S_ISLNK(mode) or "/" in member.filename or "\\" in member.filename:
        raise ArchiveError(f"{label}: refused, member {member.filename!r} is not a file at the "
                           "archive's top level")
    if member.filename != MANIFEST and not any(fnmatch.fnmatch(member.filename, f)
                                               for f in RUN_FILES):
        raise ArchiveError(f"{label}: refused, member {member.filename!r} is not a file of a "
                           f"run ({', '.join(RUN_FILES)})")


def _manifest(data, label):
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError):
        raise ArchiveError(f"{label}: {MANIFEST} is not JSON (or nested too deep)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT or not \
            isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("run"), str):
        raise ArchiveError(f"{label}: {MANIFEST} is not a format-{ARCHIVE_FORMAT} run manifest")
    return manifest
