"""Downloads: resumable, with a progress bar, checked, and fast to fail without a network.

A partial download is kept as `NAME.part` and resumed with an HTTP Range request on the next call;
the final file appears (atomically, by rename) only when every byte has arrived.
"""
import http.client
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from .captions import SPLIT_FILE_NAMES, find_dataset_files, read_split_file
from .files import DATA_DIR

FLICKR8K_URL = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"
FLICKR8K_ZIPS = ("Flickr8k_Dataset.zip", "Flickr8k_text.zip")


class DownloadError(RuntimeError):
    """A download that failed; the message says what to fetch by hand and where to put it."""


def download_file(url, dest, timeout=15, chunk_size=1 << 20):
    """Fetch `url` to `dest`, resuming a previous partial download; returns `dest`."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    try:
        request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    except ValueError:
        raise DownloadError(f"{url!r} is not a web address (http://... or https://...)") from None
    hint = f"run again to resume, or download {url} yourself and save it as {dest}"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status != 206:  # the server ignored the Range header: start over
                start = 0
            length = response.headers.get("Content-Length")
            total = start + int(length) if length else None
            with open(part, "ab" if start else "wb") as f, tqdm(
                    total=total, initial=start, unit="B", unit_scale=True, desc=dest.name) as bar:
                while chunk := response.read(chunk_size):
                    f.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        if e.code != 416:  # 416: nothing left to send, the part file is already whole
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; {hint}") from None
        total = start
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"could not download {url} ({reason}); {hint}") from None
    received = part.stat().st_size
    if total is not None and received != total:
        raise DownloadError(f"{url}: connection closed after {received} of {total} bytes "
                            f"(kept in {part}); {hint}")
    os.replace(part, dest)
    return dest


def check_zip(path):
    """Refuse a file that is not a whole zip archive, deleting it so the next try downloads anew."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        bad = "(not a zip archive)"
    if bad is not None:
        Path(path).unlink()
        raise DownloadError(f"{path}: corrupt archive, first bad member {bad}; deleted, run again")


def extract_zip(path, dest):
    """Extract `path` into `dest`, leaving out macOS resource forks."""
    with zipfile.ZipFile(path) as archive:
        archive.extractall(dest, members=[m for m in archive.namelist()
                                          if not m.startswith("__MACOSX/")])


def download_flickr8k(root=DATA_DIR / "flickr8k", base_url=FLICKR8K_URL):
    """Download and extract Flickr8k into `root` (images and text files); nothing twice.

    Zips already in `root/downloads/` (fetched by hand on a machine with internet) are used as is.
    `base_url` can point at a mirror holding the same two zips. The download counts as done only
    when every image the official split files name has arrived.
    """
    root = Path(root)
    done = root / ".extracted"
    if done.is_file():
        return root
    for name in FLICKR8K_ZIPS:
        zip_path = download_file(base_url + name, root / "downloads" / name)
        check_zip(zip_path)
        extract_zip(zip_path, root)
    images_dir, _, split_files = find_dataset_files(root)
    named = [n for path in split_files.values() for n in read_split_file(path)]
    missing = [n for n in named if not (images_dir / n).is_file()]
    if not named or missing:
        raise DownloadError(
            f"{root}: {len(missing)} of the {len(named)} images named in the split files "
            f"({', '.join(SPLIT_FILE_NAMES.values())}) are missing from {images_dir}"
            f"{f' (first: {missing[0]})' if missing else ''}; delete {root} and run again")
    done.write_text("ok\n")
    return root
