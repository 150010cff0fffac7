"""Downloads: resumable, with a progress bar, checked, and fast to fail without a network.

A partial download is kept as `NAME.part` and resumed with an HTTP Range request on the next call;
the final file appears (atomically, by rename) only when every byte has arrived.

What may be fetched is a `FetchPolicy`. The notebooks' own downloads (Flickr8k, GloVe, a mirror
the user chose) use `TRUSTED`. The app fetches an address a visitor typed, on the server's
network: `PUBLIC` takes only public addresses (the name is resolved once, that address checked and
connected to, and every redirect checked again), at most 20 MB, within 20 seconds in all.
"""
import contextlib
import http.client
import ipaddress
import os
import socket
import ssl
import time
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["DownloadError", "FetchPolicy", "TRUSTED", "PUBLIC", "download_file", "check_zip",
           "extract_zip"]


class DownloadError(RuntimeError):
    """A download that failed; the message says what to fetch by hand and where to put it, and
    `reason` says only what went wrong (for a page, where that advice makes no sense)."""

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class FetchPolicy:
    public_only: bool = False   # refuse loopback, private, link-local, multicast, reserved addresses
    max_bytes: int = None       # the body's size cap
    deadline_s: float = None    # the whole download's time cap, not only each read's
    max_redirects: int = 5
    allowed_networks: tuple = ()  # exceptions to public_only, e.g. ("10.0.0.0/8",) for a LAN server


TRUSTED = FetchPolicy()
PUBLIC = FetchPolicy(public_only=True, max_bytes=20 << 20, deadline_s=20)


class _Refused(Exception):
    """Why an address or a body was refused, said to the user as the reason."""


class _NotAWebAddress(Exception):
    """A URL that is not http:// or https://, a redirect's included."""


def _checked_address(host, port, policy):
    """The address `host` resolves to, refused unless public where the policy says so."""
    try:
        address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as e:
        raise OSError(f"cannot resolve {host}: {e.strerror}") from None
    ip = ipaddress.ip_address(address.split("%")[0])
    ip = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:127.0.0.1 is 127.0.0.1
    allowed = any(ip in ipaddress.ip_network(n) for n in policy.allowed_networks)
    if policy.public_only and (not ip.is_global or ip.is_multicast) and not allowed:
        kind = next((k for k in ("loopback", "link_local", "multicast", "private", "reserved")
                     if getattr(ip, f"is_{k}")), "non-public")
        raise _Refused(f"{host} is {ip}, a {kind.replace('_', '-')} address: only public "
                       "addresses are fetched")
    return address


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the address that was checked, never to a second resolution of the name."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self):
        self.sock = self.body_socket = socket.create_connection((self.address, self.port),
                                                                self.timeout)


class _PinnedHTTPS(_PinnedHTTP):
    default_port = 443

    def connect(self):
        super().connect()
        context = ssl.create_default_context()
        self.sock = self.body_socket = context.wrap_socket(self.sock, server_hostname=self.host)


def _open(url, headers, timeout, policy):
    """(connection, response) for `url`, following redirects, each one checked by `policy`."""
    for _ in range(policy.max_redirects + 1):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _NotAWebAddress(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = _checked_address(parts.hostname, port, policy)
        connection = (_PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP)(
            parts.hostname, port, address, timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", target, headers={"User-Agent": "image-captioning", **headers})
        response = connection.getresponse()
        location = response.getheader("Location")
        if response.status in (301, 302, 303, 307, 308) and location:
            connection.close()
            url = urllib.parse.urljoin(url, location)
            continue
        return connection, response
    raise _Refused(f"more than {policy.max_redirects} redirects")


def download_file(url, dest, timeout=15, chunk_size=1 << 20, policy=TRUSTED):
    """Fetch `url` to `dest` as `policy` allows, resuming a previous partial download; returns
    `dest`."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    hint = f"run again to resume, or download {url} yourself and save it as {dest}"
    deadline = time.monotonic() + policy.deadline_s if policy.deadline_s else None
    try:
        connection, response = _open(url, {"Range": f"bytes={start}-"} if start else {}, timeout,
                                     policy)
        with contextlib.closing(connection), response:
            if response.status == 416:  # nothing left to send: the part file is already whole
                total = start
            else:
                if response.status >= 400:
                    raise _HTTPError(response.status, response.reason)
                if response.status != 206:  # the server ignored the Range header: start over
                    start = 0
                length = response.getheader("Content-Length")
                total = start + int(length) if length else None
                if policy.max_bytes and total and total > policy.max_bytes:
                    raise _Refused(f"{total:,} bytes, over the limit of {policy.max_bytes:,}")
                _receive(connection, response, part, start, total, chunk_size, timeout, deadline,
                         policy, dest.name)
    except _NotAWebAddress:
        raise DownloadError(f"{url!r} is not a web address (http://... or https://...)",
                            "not a web address: it starts with http:// or https://") from None
    except _Refused as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: refused, {e}", f"refused: {e}") from None
    except _HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.status} {e.reason}; {hint}",
                            f"the server answered HTTP {e.status} {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"could not download {url} ({reason}); {hint}",
                            f"no answer from the server: {reason}") from None
    received = part.stat().st_size
    if total is not None and received != total:
        raise DownloadError(f"{url}: connection closed after {received} of {total} bytes "
                            f"(kept in {part}); {hint}",
                            f"the connection closed after {received} of {total} bytes")
    os.replace(part, dest)
    return dest


class _HTTPError(Exception):
    def __init__(self, status, reason):
        super().__init__(status, reason)
        self.status, self.reason = status, reason


def _receive(connection, response, part, start, total, chunk_size, timeout, deadline, policy,
             label):
    """Stream the body into `part`, within the policy's size and time caps."""
    with open(part, "ab" if start else "wb") as f, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, desc=label) as bar:
        received = start
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Refused(f"took longer than {policy.deadline_s:g} s")
                # `sock`, not kept by http.client once the response owns it, for each read: a
                # trickle of bytes cannot outlast the deadline.
                connection.body_socket.settimeout(min(timeout, left))
            try:
                chunk = response.read1(chunk_size)  # what has arrived, not a full chunk's wait
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline - 0.05:
                    raise _Refused(f"took longer than {policy.deadline_s:g} s") from None
                raise
            if not chunk:
                return
            received += len(chunk)
            if policy.max_bytes and received > policy.max_bytes:
                raise _Refused(f"over the limit of {policy.max_bytes:,} bytes")
            f.write(chunk)
            bar.update(len(chunk))


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
