"""What a hostile run archive costs before it is refused: time and memory, whatever it declares.

    .venv/bin/python benchmarks/hostile_archives.py [--quick]

Exports the shipped run (`models/flickr8k-pretrained`, without its optimizer state), then imports
copies of it rewritten as an attacker would (manifest digests made to match, so every copy
reaches the record's checks): a record declaring 8,000 units, one declaring 1,000 units (within
the cap, but not what its weights file holds), a weights file declaring a 1 GiB dataset it does
not store, and a bzip2 member declared at 100 bytes holding 1 GB of zeros. Each is timed and its
growth of the process's peak memory measured (`ru_maxrss`, which only grows: the cases run
smallest first, and a growth of 0 means under the peak already reached by loading the run).
Before issue 45 the first took 232 s and 6 GB. With --quick, the bzip2 case holds 100 MB. Last
line: one JSON object.
"""
import argparse
import bz2
import hashlib
import io
import json
import os
import resource
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import h5py

import utils

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "flickr8k-pretrained"


def repacked(archive, path, change, compression=zipfile.ZIP_DEFLATED):
    """A copy of `archive` whose members `change` rewrites, its manifest made to match."""
    with zipfile.ZipFile(archive) as source:
        members = {name: source.read(name) for name in source.namelist()}
    manifest = json.loads(members.pop("manifest.json"))
    members = change(members)
    manifest["files"] = {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                         for name, data in members.items()}
    with zipfile.ZipFile(path, "w", compression) as target:
        target.writestr("manifest.json", json.dumps(manifest))
        for name, data in members.items():
            target.writestr(name, data)
    return path


def with_units(units):
    def change(members):
        record = json.loads(members["config.json"])
        record["model"]["units"] = units
        return members | {"config.json": json.dumps(record).encode()}
    return change


def empty_weights(members):
    data = io.BytesIO()
    with h5py.File(data, "w") as f:
        f.create_dataset("vars/0", (1 << 28,), "float32")  # 1 GiB declared, nothing stored
    return members | {"model.weights.h5": data.getvalue()}


def bzip2_bomb(path, megabytes):
    """A zip whose one bzip2 member declares 100 bytes and holds `megabytes` MB of zeros."""
    block = bytes(1 << 20)
    compressor = bz2.BZ2Compressor()
    packed = b"".join(compressor.compress(block) for _ in range(megabytes)) + compressor.flush()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_BZIP2) as target:
        target.writestr("model.weights.h5", b"x" * 100)
    data = path.read_bytes()  # swap the 100 bytes' stream for the bomb's, sizes left as declared
    with zipfile.ZipFile(path) as source:
        info = source.getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    path.write_bytes(data[:start] + packed + data[start + info.compress_size:])
    return path


def refused(path, models_dir):
    """(seconds, peak memory growth in MB, what was said) of importing `path`."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        utils.import_run(path, models_dir)
        said = "imported"
    except utils.ArchiveError as e:
        said = str(e).split(": ", 1)[1]
    return {"seconds": round(time.perf_counter() - started, 3),
            "peak_memory_growth_mb": round(
                (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, 1),
            "archive_kb": round(path.stat().st_size / 1024, 1), "said": said[:160]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 100 MB bzip2 member, not 1 GB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        archive = utils.export_run(SHIPPED, work / "run.zip", training_state=False)
        cases = {
            "bzip2 member declared 100 bytes": bzip2_bomb(work / "bomb.zip",
                                                          100 if args.quick else 1000),
            "weights declaring 1 GiB": repacked(archive, work / "empty.zip", empty_weights),
            "units 8000": repacked(archive, work / "8000.zip", with_units(8000)),
            "units 1000, weights of 256": repacked(archive, work / "1000.zip", with_units(1000)),
        }
        report = {name: refused(path, work / "models") for name, path in cases.items()}
    print(json.dumps({"cases": report, "quick": args.quick}))


if __name__ == "__main__":
    main()
