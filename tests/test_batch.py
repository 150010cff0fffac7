"""The batch command (utils/batch.py): a folder of photos captioned end to end, an unreadable file
reported and counted, a killed run resumed without losing or repeating a photo."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

from PIL import Image

import utils
import utils.batch
from conftest import REPO, SHIPPED_RUN


def caption_photos(*arguments, **options):
    """The command in a process of its own, as a user runs it."""
    return subprocess.Popen([sys.executable, "-m", "utils.batch", "--run", str(SHIPPED_RUN),
                             *map(str, arguments)], cwd=REPO, stderr=subprocess.PIPE, text=True,
                            **options)


def photo_folder(shared_flickr8k, folder):
    """Twelve photos (eleven JPEGs, a PNG in a subfolder), a file that is not a photo though it
    says so, and a text file."""
    folder.mkdir()
    for photo in sorted((shared_flickr8k / "Images").glob("*.jpg"))[:11]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    (folder / "more").mkdir()
    Image.open(photo).save(folder / "more" / "again.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff this is no photo")
    (folder / "notes.txt").write_text("not a photo, and not said to be one")
    return folder


def test_a_killed_run_resumes_and_every_photo_is_written_once(shared_flickr8k, tmp_path):
    folder = photo_folder(shared_flickr8k, tmp_path / "photos")
    out = tmp_path / "captions.jsonl"
    first = caption_photos(folder, "--out", out, "--batch-size", "2")
    deadline = time.monotonic() + 300
    while first.poll() is None and time.monotonic() < deadline:  # killed once a batch is on disk
        if out.is_file() and out.read_text().count("\n") >= 2:
            first.send_signal(signal.SIGKILL)
        time.sleep(0.02)
    assert first.wait() == -signal.SIGKILL
    written = out.read_text().count("\n")
    assert 2 <= written < 13
    with open(out, "a") as f:  # as if killed in the middle of writing a line
        f.write('{"file": "half a li')

    second = caption_photos(folder, "--out", out, "--batch-size", "2")
    _, log = second.communicate(timeout=600)
    assert second.returncode == 0, log
    assert f"{written} already in" in log and "1 other files left out" in log
    records = [json.loads(line) for line in out.read_text().splitlines()]
    photos = sorted(str(p.relative_to(tmp_path)) for p in folder.rglob("*")
                    if p.is_file() and p.suffix != ".txt")
    assert sorted(os.path.relpath(r["file"], tmp_path) for r in records) == photos  # each once
    broken = [r for r in records if r["error"]]
    assert len(broken) == 1 and "broken.jpg" in broken[0]["error"] and not broken[0]["caption"]
    assert re.search(r"\b1 unreadable", log) and "unreadable: " in log and "broken.jpg" in log

    captioner = utils.Captioner.from_run(SHIPPED_RUN)
    for record in records:
        if not record["error"]:
            caption = utils.caption_image(captioner, record["file"])
            assert record["caption"] == caption.text
            assert abs(record["score"] - caption.score) < 1e-3


def test_csv_holds_what_json_lines_hold(shared_flickr8k, tmp_path):
    folder = photo_folder(shared_flickr8k, tmp_path / "photos")
    for suffix in ("jsonl", "csv"):
        done = caption_photos(folder, "--out", tmp_path / f"captions.{suffix}",
                              "--beam-width", "1")
        assert done.wait(timeout=600) == 0
    with open(tmp_path / "captions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    lines = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert [(r["file"], r["caption"]) for r in rows] == [(r["file"], r["caption"]) for r in lines]
    assert list(rows[0]) == list(utils.batch.FIELDS)


def test_the_readme_shows_the_commands_help():
    shown = subprocess.run([sys.executable, "-m", "utils.batch", "--help"], cwd=REPO, text=True,
                           capture_output=True, env=os.environ | {"COLUMNS": "100"}, check=True)
    assert shown.stdout.strip() in (REPO / "README.md").read_text()
