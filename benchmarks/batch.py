"""The batch command's speed: `caption-photos` on a folder of 1,000 JPEGs, end to end.

    python benchmarks/batch.py [--quick]

The folder holds the 875 shared Flickr8k photos (../shared/flickr8k/Images) and the first 125
of them again under other names (links, in a temporary folder); the shipped run captions it with
our default beam 5, as a user runs the command, in a process of its own. Photos a second are
counted from the command's own progress (after TensorFlow's start and the run's loading) and from
the wall clock. Last line: one JSON object.
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared_data import REPO, shared_dir

SHIPPED_RUN = REPO / "models" / "flickr8k-pretrained"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 photos")
    args = parser.parse_args()
    photos = sorted((shared_dir() / "Images").glob("*.jpg"))
    photos = (photos + [p for p in photos[:125]])[:100 if args.quick else 1000]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for i, photo in enumerate(photos):
            (folder / f"{i:04d}_{photo.name}").symlink_to(photo)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "utils.batch", "--run", str(SHIPPED_RUN),
                               str(folder), "--out", str(Path(tmp) / "captions.jsonl")],
                              cwd=REPO, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - started
        lines = (Path(tmp) / "captions.jsonl").read_text().splitlines()
    # tqdm's last line: "100%|...| 1000/1000 [00:27<00:00, 35.8photo/s]"
    minutes, seconds = re.findall(r"\[(\d+):(\d+)<", done.stderr)[-1]
    rate = float(re.findall(r"([\d.]+)photo/s\]", done.stderr)[-1])
    print(json.dumps({"photos": len(photos), "written": len(lines),
                      "seconds_captioning": int(minutes) * 60 + int(seconds),
                      "photos_per_second": rate,
                      "seconds_wall_clock": round(wall, 1),
                      "photos_per_second_wall_clock": round(len(photos) / wall, 1),
                      "summary": done.stderr.strip().splitlines()[-1], "quick": args.quick}))


if __name__ == "__main__":
    main()
