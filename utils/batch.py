"""The batch command: captions for photos and folders of photos, written as JSON Lines or CSV.

    caption-photos --run models/flickr8k-pretrained photos/ more.jpg --out captions.jsonl
    python -m utils.batch --help

Photos are read, encoded and decoded `--batch-size` at a time, with a progress bar. Each batch's
lines are appended to the output and flushed to disk before the next is read, so an interrupted
run (Ctrl-C, a closed laptop, a killed process) loses at most the batch in flight: run the same
command again and it skips every photo already written, after cutting a line left half-written.
A file that is not a usable image is written with its reason (the `error` field) and counted,
never fatal; it is not tried again on a resumed run.
"""
import argparse
import csv
import io
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

import utils  # TensorFlow's modules through the package: its start-up lines hidden

from .images import ImageError

__all__ = ["PHOTO_SUFFIXES", "BATCH_SIZE", "FIELDS", "photo_files", "written_files", "main"]

# What a folder's files must end with to be read as photos (other files are counted, left out).
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# Photos read, encoded and decoded together: the encoder's and the search's batch.
BATCH_SIZE = 32
# One record a photo: its file as given on the command line, its caption, its score, why not.
FIELDS = ("file", "caption", "score", "error")


def photo_files(paths):
    """(every photo to caption, in order: files as given, then each folder's photos sorted,
    subfolders included; how many of the folders' files were left out as not photos)."""
    photos, others = [], 0
    for path in map(Path, paths):
        if not path.is_dir():
            photos.append(path)
            continue
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            if file.name.startswith("."):
                continue
            if file.suffix.lower() in PHOTO_SUFFIXES:
                photos.append(file)
            else:
                others += 1
    return photos, others


def written_files(out):
    """The files an earlier run already wrote to `out` (JSON Lines, or CSV by its suffix). A last
    line cut short by an interruption is removed from the file, so that it is written again."""
    if not out.is_file():
        return set()
    data = out.read_bytes()
    whole = data[:data.rfind(b"\n") + 1]
    if len(whole) < len(data):
        with open(out, "r+b") as f:
            f.truncate(len(whole))
    text = whole.decode("utf-8")
    if out.suffix.lower() == ".csv":
        return {row["file"] for row in csv.DictReader(io.StringIO(text))}
    return {json.loads(line)["file"] for line in text.splitlines() if line.strip()}


def _lines(records, as_csv):
    """Records (dicts of FIELDS) as the output's lines."""
    if not as_csv:
        return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    buffer = io.StringIO()
    csv.DictWriter(buffer, FIELDS, lineterminator="\n").writerows(records)
    return buffer.getvalue()


def _read(path, captioner):
    """(the photo as the captioner's encoders read it, None) or (None, why it cannot be read)."""
    try:
        return captioner.read(path), None
    except (ImageError, OSError) as e:  # OSError: a file that vanished or cannot be opened
        return None, str(e)


def _caption_batch(captioner, paths, setting, readers):
    """One record per path: its caption and score, or why it could not be read. The photos are
    read by `readers` (a thread pool: Pillow decodes without holding the GIL)."""
    photos, records = [], {}
    for path, (photo, why) in zip(paths, readers.map(lambda p: _read(p, captioner), paths)):
        if why is None:
            photos.append((path, photo))
        else:
            records[path] = {"file": str(path), "caption": "", "score": None, "error": why}
    if photos:
        for (path, _), caption in zip(photos, utils.caption_photos(captioner, [p for _, p in photos],
                                                                   setting)):
            records[path] = {"file": str(path), "caption": caption.text,
                             "score": round(caption.score, 4), "error": None}
    return [records[path] for path in paths]


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        prog="caption-photos", description="Caption photos and folders of photos with a trained "
        "run (or several: one ensemble), as JSON Lines or CSV (file, caption, score, error).")
    parser.add_argument("photos", nargs="+", help="photo files and folders (read recursively)")
    parser.add_argument("--run", action="append", required=True, metavar="FOLDER",
                        help="a run folder of notebook 04; repeat for an ensemble")
    parser.add_argument("--out", type=Path, metavar="FILE", default=Path("captions.jsonl"),
                        help="where the captions go: .jsonl, or .csv (default: captions.jsonl); "
                        "photos it already holds are skipped")
    default = utils.DEFAULT_DECODING
    parser.add_argument("--beam-width", type=int, metavar="K", default=default.beam_width,
                        help="1: greedy search (default: %(default)s)")
    parser.add_argument("--length-penalty", type=float, metavar="A",
                        default=default.length_penalty,
                        help="0: summed log-probability; 1: per word (default: %(default)s)")
    parser.add_argument("--no-repeat-ngram", type=int, metavar="N",
                        default=default.no_repeat_ngram,
                        help="no n-gram twice in a caption; 0: no such rule (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, metavar="N", default=BATCH_SIZE,
                        help="photos encoded and decoded together (default: %(default)s)")
    parser.add_argument("--weights-file", metavar="FILE",
                        help="only for runs whose encoder used a weights file")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_arguments(argv)
    setting = utils.DecodingSetting(args.beam_width, args.length_penalty, args.no_repeat_ngram)
    photos, others = photo_files(args.photos)
    done = written_files(args.out)
    to_do = [path for path in photos if str(path) not in done]
    print(f"{len(photos)} photos, {len(photos) - len(to_do)} already in {args.out}"
          + (f", {others} other files left out" if others else ""), file=sys.stderr)
    captioner = utils.Captioner.from_run(args.run, args.weights_file)
    as_csv = args.out.suffix.lower() == ".csv"
    unreadable = 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8", newline="") as out, ThreadPoolExecutor() as readers, \
            tqdm(total=len(to_do), unit="photo", file=sys.stderr) as progress:
        if as_csv and out.tell() == 0:
            out.write(",".join(FIELDS) + "\n")
        try:
            for first in range(0, len(to_do), args.batch_size):
                records = _caption_batch(captioner, to_do[first:first + args.batch_size], setting,
                                         readers)
                for record in records:
                    if record["error"]:
                        unreadable += 1
                        progress.write(f"unreadable: {record['error']}", file=sys.stderr)
                out.write(_lines(records, as_csv))
                out.flush()
                os.fsync(out.fileno())  # on disk before the next batch: nothing lost to a crash
                progress.update(len(records))
        except KeyboardInterrupt:
            print(f"\ninterrupted: {progress.n} photos written to {args.out}; run the same command "
                  "again to go on", file=sys.stderr)
            return 130
    print(f"{len(to_do) - unreadable} photos captioned, {unreadable} unreadable (their reasons "
          f"are in {args.out}), {len(photos) - len(to_do)} already done", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
