"""A trained run in one file, to share: `export_run` writes a run folder's files into one zip with
a manifest of their sizes and SHA-256 digests; `import_run` reads one back, from a path or an
http(s) address, into a models folder, refusing what is not a run.

What a run needs later is its record, vocabulary and weights (and what shows how it did: its
history, its evaluations); its encoded captions and checkpoints are left out. An archive is
checked before anything is written: a member outside `RUN_FILES`, a folder, a link, a size over
the caps, a digest that does not match or a run that does not load is refused, the message naming
the archive. Nothing in it is a pickle: JSON and Keras weights files, loaded as every run is.
"""
import dataclasses
import fnmatch
import hashlib
import json
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

from .download import PUBLIC, DownloadError, download_file, safe_file_name
from .files import atomic_path
from .runs import RunConfigError, load_run
from .training import WEIGHTS_FILE

__all__ = ["RUN_FILES", "ARCHIVE_FORMAT", "RUN_FETCH", "ArchiveError", "export_run", "import_run"]

# What an archive may hold of a run folder (shell patterns), besides its manifest.
RUN_FILES = ("config.json", "vocabulary.json", "model.weights.h5", "history.json", "history.csv",
             "self_critical.json", "evaluation-*.json")
REQUIRED = ("config.json", "vocabulary.json", "model.weights.h5")
MANIFEST = "manifest.json"
ARCHIVE_FORMAT = 1
MAX_RUN_BYTES = 500 << 20  # all members together, uncompressed: a large Transformer is ~50 MB
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
    with tempfile.TemporaryDirectory(dir=_existing(models_dir)) as work:
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
            load_run(unpacked)
        except (RunConfigError, ValueError, OSError) as e:
            raise ArchiveError(f"{source}: not a run that loads ({e})") from None
        target = models_dir / (name or safe_file_name(manifest["run"], "run"))
        if target.exists():
            if sorted(p.name for p in target.iterdir()) == sorted(contents) and all(
                    (target / m).read_bytes() == data for m, data in contents.items()):
                return target  # this very run, imported before
            raise ArchiveError(f"{target} already holds another run: give the import another "
                               "name, or move that folder away")
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


def _checked_contents(path, label):
    """(manifest, {member: bytes}) of a run archive, every check passed, or ArchiveError."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            total = sum(m.file_size for m in members)
            if total > MAX_RUN_BYTES:
                raise ArchiveError(f"{label}: refused, {total / 1e6:,.0f} MB once extracted (a "
                                   f"run archive holds at most {MAX_RUN_BYTES / 1e6:,.0f} MB)")
            for member in members:
                _check_member(member, label)
            names = [m.filename for m in members]
            if MANIFEST not in names:
                raise ArchiveError(f"{label}: no {MANIFEST}: not a run archive (export one with "
                                   "utils.export_run)")
            contents = {name: archive.read(name) for name in names}
    except zipfile.BadZipFile as e:
        raise ArchiveError(f"{label}: not a whole zip archive ({e})") from None
    except (zipfile.LargeZipFile, EOFError, OSError) as e:  # damaged inside, e.g. a bad CRC
        raise ArchiveError(f"{label}: damaged ({e})") from None
    manifest = _manifest(contents.pop(MANIFEST), label)
    listed = manifest["files"]
    if sorted(listed) != sorted(contents):
        raise ArchiveError(f"{label}: its members ({', '.join(sorted(contents))}) are not the "
                           f"ones its manifest lists ({', '.join(sorted(listed))})")
    for member, data in contents.items():
        if _digest(data) != listed[member].get("sha256"):
            raise ArchiveError(f"{label}: {member} is damaged (its SHA-256 is not the manifest's)")
    missing = [m for m in REQUIRED if m not in contents]
    if missing:
        raise ArchiveError(f"{label}: a run needs {', '.join(missing)}, which it lacks")
    return manifest, contents


def _check_member(member, label):
    """A plain file of RUN_FILES, at the archive's top level: nothing else is written."""
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
    except ValueError:
        raise ArchiveError(f"{label}: {MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT or not \
            isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("run"), str):
        raise ArchiveError(f"{label}: {MANIFEST} is not a format-{ARCHIVE_FORMAT} run manifest")
    return manifest
