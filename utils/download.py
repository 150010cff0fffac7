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


# A zip this project extracts is refused above these sizes: Flickr8k's images are 1.1 GB,
# Flickr30k's 4.4 GB, COCO's 2014 train+val 19 GB in 123,287 files.
MAX_ZIP_BYTES = 40 << 30      # uncompressed, all members together
MAX_ZIP_MEMBERS = 1_000_000   # files and folders


def check_zip(path, delete_if_bad=False, max_bytes=MAX_ZIP_BYTES, max_members=MAX_ZIP_MEMBERS):
    """Refuse a zip that is not whole, is too large once extracted, or has a member that would
    land outside the folder it is extracted into. Only a zip we downloaded is deleted when bad
    (so the next try downloads it anew): a user's own file is never touched."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            size = sum(m.file_size for m in members)
            escaping = next((m.filename for m in members if Path(m.filename).is_absolute()
                             or ".." in Path(m.filename).parts), None)
            if len(members) > max_members or size > max_bytes or escaping:
                raise DownloadError(
                    f"{path}: refused, "
                    + (f"member {escaping!r} would be written outside the target folder" if escaping
                       else f"{len(members):,} members, {size / 1e9:.1f} GB extracted (the limits "
                            f"are {max_members:,} and {max_bytes / 1e9:.0f} GB)"))
            bad = archive.testzip()
    except zipfile.BadZipFile:
        bad = "(not a zip archive)"
    if bad is not None:
        if delete_if_bad:
            path.unlink()
        raise DownloadError(f"{path}: corrupt archive, first bad member {bad}; "
                            + ("deleted, run again" if delete_if_bad else "replace it"))


def extract_zip(path, dest, prefix=""):
    """Extract the members of `path` whose names start with `prefix` (all, by default) into
    `dest`, leaving out macOS resource forks. Check the zip first with `check_zip`."""
    with zipfile.ZipFile(path) as archive:
        archive.extractall(dest, members=[m for m in archive.namelist()
                                          if m.startswith(prefix) and not m.startswith("__MACOSX/")])
