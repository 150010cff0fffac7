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

__all__ = ["DownloadError", "download_file", "check_zip", "extract_zip"]


class DownloadError(RuntimeError):
    """A download that failed; the message says what to fetch by hand and where to put it, and
    `reason` says only what went wrong (for a page, where that advice makes no sense)."""

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason or message


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
        raise DownloadError(f"{url!r} is not a web address (http://... or https://...)",
                            "not a web address: it starts with http:// or https://") from None
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
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; {hint}",
                                f"the server answered HTTP {e.code} {e.reason}") from None
        total = start
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"could not download {url} ({reason}); {hint}",
                            f"no answer from the server: {reason}") from None
    received = part.stat().st_size
    if total is not None and received != total:
        raise DownloadError(f"{url}: connection closed after {received} of {total} bytes "
                            f"(kept in {part}); {hint}",
                            f"the connection closed after {received} of {total} bytes")
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
