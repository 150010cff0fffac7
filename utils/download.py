"""Downloads: resumable, with a progress bar, checked, and fast to fail without a network.

A partial download is kept as `NAME.part` and resumed with an HTTP Range request on the next call;
the final file appears (atomically, by rename) only when every byte has arrived.

What may be fetched is a `FetchPolicy`. The notebooks' own downloads (Flickr8k, GloVe, a mirror
the user chose) use `TRUSTED`. The app fetches an address a visitor typed, on the server's
network: `PUBLIC` takes only public addresses (the name is resolved once, that address checked and
connected to, and every redirect checked again), at most 20 MB, within 20 seconds in all: the
connection, the headers and the body together, however slowly a server sends them.
"""
import contextlib
import hashlib
import http.client
import ipaddress
import os
import re
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm  # text, not a widget: it stays readable in a saved notebook

# A saved notebook keeps each redraw of a text progress bar as a line: one every 10 s at most.
PROGRESS_INTERVAL_S = 10


def progress_bar(**options):
    """A text progress bar for long work: on stdout (a saved notebook shows stderr as an error
    box), redrawn every PROGRESS_INTERVAL_S at most. `options`: tqdm's."""
    return tqdm(file=sys.stdout, mininterval=PROGRESS_INTERVAL_S, **options)

__all__ = ["DownloadError", "FetchPolicy", "TRUSTED", "PUBLIC", "download_file", "file_sha256",
           "safe_file_name", "check_zip", "extract_zip"]


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

    def __post_init__(self):
        # Parsed here, so that a mistyped network fails where the policy is made (the app's
        # start), not at every fetch.
        networks = []
        for network in self.allowed_networks:
            try:
                networks.append(ipaddress.ip_network(str(network).strip(), strict=False))
            except ValueError:
                raise ValueError(f"{str(network).strip()!r} is not a network (for example "
                                 "10.0.0.0/8 or fd00::/8)") from None
        object.__setattr__(self, "allowed_networks", tuple(networks))


TRUSTED = FetchPolicy()
PUBLIC = FetchPolicy(public_only=True, max_bytes=20 << 20, deadline_s=20)


class _Refused(Exception):
    """Why an address or a body was refused, said to the user as the reason."""


class _NotAWebAddress(Exception):
    """A URL that is not http:// or https://, a redirect's included."""


# IPv6 prefixes that carry an IPv4 address in their last 32 bits, which is where such a packet
# goes: NAT64's well-known and local-use prefixes, and the deprecated IPv4-compatible form.
IPV4_CARRYING = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96"))


def _embedded_ipv4(ip):
    """The IPv4 address an IPv6 address leads to, if it embeds one (mapped, 6to4, Teredo, NAT64,
    IPv4-compatible), else None."""
    if ip.version == 4:
        return None
    if ip.ipv4_mapped or ip.sixtofour:
        return ip.ipv4_mapped or ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]  # the client's address, where the relay delivers
    if int(ip) > 1 and any(ip in network for network in IPV4_CARRYING):  # not :: or ::1
        return ipaddress.ip_address(int(ip) & 0xFFFFFFFF)
    return None


def _not_public(ip):
    """(the address, what kind of non-public address it is: "loopback", ...) for `ip` or the IPv4
    address it leads to, whichever is not public; None if both are."""
    for address in filter(None, (_embedded_ipv4(ip), ip)):
        if not address.is_global or address.is_multicast or address.is_reserved:
            return address, next((k for k in ("loopback", "link_local", "multicast", "private",
                                              "reserved") if getattr(address, f"is_{k}")),
                                 "non-public").replace("_", "-")
    return None


def _checked_address(host, port, policy):
    """The address `host` resolves to, refused unless public where the policy says so."""
    try:
        address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as e:
        raise OSError(f"cannot resolve {host}: {e.strerror}") from None
    ip = ipaddress.ip_address(address.split("%")[0])
    allowed = any(a in n for a in filter(None, (ip, _embedded_ipv4(ip)))
                  for n in policy.allowed_networks)
    refused = _not_public(ip) if policy.public_only and not allowed else None
    if refused:
        raise _Refused(f"{host} is {refused[0]}, a {refused[1]} address: only public addresses "
                       "are fetched")
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


class _Clock:
    """The policy's deadline for a whole exchange. Each read waits at most `timeout`, but a server
    may send a byte just before each wait runs out, of its headers as of its body; so when the
    time is up the open connection's socket is shut down, which ends whatever read is waiting."""

    def __init__(self, seconds, timeout):
        self.deadline = time.monotonic() + seconds if seconds else None
        self.timeout, self.connection = timeout, None
        self._timer = threading.Timer(seconds, self._expire) if seconds else None

    def read_timeout(self):
        """A read's (and a connection's) timeout: `timeout`, or less when the deadline is nearer."""
        if self.deadline is None:
            return self.timeout
        return max(0.01, min(self.timeout, self.deadline - time.monotonic()))

    @property
    def expired(self):
        return self.deadline is not None and time.monotonic() >= self.deadline - 0.05

    def _expire(self):
        with contextlib.suppress(AttributeError, OSError):
            self.connection.body_socket.shutdown(socket.SHUT_RDWR)

    def __enter__(self):
        if self._timer:
            self._timer.start()
        return self

    def __exit__(self, *exc):
        if self._timer:
            self._timer.cancel()


def _open(url, headers, clock, policy):
    """(connection, response) for `url`, following redirects, each one checked by `policy`."""
    for _ in range(policy.max_redirects + 1):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _NotAWebAddress(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = _checked_address(parts.hostname, port, policy)
        connection = (_PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP)(
            parts.hostname, port, address, clock.read_timeout())
        clock.connection = connection
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


def download_file(url, dest, timeout=15, chunk_size=1 << 20, policy=TRUSTED, sha256=None):
    """Fetch `url` to `dest` as `policy` allows, resuming a previous partial download; returns
    `dest`. With `sha256` (hex), the file must have that digest, or it is deleted and refused."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    hint = f"run again to resume, or download {url} yourself and save it as {dest}"
    clock = _Clock(policy.deadline_s, timeout)
    try:
        with clock:
            connection, response = _open(url, {"Range": f"bytes={start}-"} if start else {},
                                         clock, policy)
            with contextlib.closing(connection), response:
                total = _receive(connection, response, part, start, clock, chunk_size, policy,
                                 dest.name)
    except _NotAWebAddress:
        raise DownloadError(f"{url!r} is not a web address (http://... or https://...)",
                            "not a web address: it starts with http:// or https://") from None
    except _StalePart:
        part.unlink()  # longer than the file, or of a length the server does not confirm
        return download_file(url, dest, timeout, chunk_size, policy, sha256)
    except _Refused as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: refused, {e}", f"refused: {e}") from None
    except _HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.status} {e.reason}; {hint}",
                            f"the server answered HTTP {e.status} {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        if clock.expired:  # the socket shut down at the deadline
            raise _too_slow(url, part, policy) from None
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"could not download {url} ({reason}); {hint}",
                            f"no answer from the server: {reason}") from None
    received = part.stat().st_size
    if clock.expired:
        raise _too_slow(url, part, policy)
    if total is not None and received != total:
        raise DownloadError(f"{url}: connection closed after {received} of {total} bytes "
                            f"(kept in {part}); {hint}",
                            f"the connection closed after {received} of {total} bytes")
    found = sha256 and file_sha256(part)
    if found and found != sha256.lower():
        part.unlink()
        raise DownloadError(f"{url}: the file's SHA-256 is {found}, not {sha256}: deleted; run "
                            "again, or check the address", "its checksum is not the expected one")
    os.replace(part, dest)
    return dest


def _too_slow(url, part, policy):
    """The error of an exchange past the policy's deadline; what arrived of it is deleted."""
    part.unlink(missing_ok=True)
    return DownloadError(f"{url}: refused, took longer than {policy.deadline_s:g} s",
                         f"refused: took longer than {policy.deadline_s:g} s")


def file_sha256(path):
    """The SHA-256 of a file's bytes (hex), read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_file_name(url, default="image"):
    """A file name for what `url` points at that stays inside any folder: its last path segment
    with only letters, digits, '.', '_' and '-', at most 100 characters, never '.' or '..'."""
    name = urllib.parse.unquote(urllib.parse.urlsplit(str(url)).path).rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[-100:]
    return name or default


class _HTTPError(Exception):
    def __init__(self, status, reason):
        super().__init__(status, reason)
        self.status, self.reason = status, reason


class _StalePart(Exception):
    """A partial download the server's answer does not confirm: it is discarded."""


def _content_range_length(response):
    """The whole file's length from a `Content-Range: bytes .../LENGTH` header, or None."""
    match = re.fullmatch(r"bytes [^/]+/(\d+)", response.getheader("Content-Range") or "")
    return int(match.group(1)) if match else None


def _receive(connection, response, part, start, clock, chunk_size, policy, label):
    """Stream the body into `part` (after its first `start` bytes), within the policy's size cap;
    returns the file's whole length when the server says it, else None."""
    if response.status == 416:  # nothing to send from `start`: whole only if the length agrees
        if _content_range_length(response) != start:
            raise _StalePart()
        return start
    if response.status >= 400:
        raise _HTTPError(response.status, response.reason)
    if response.status != 206:  # the server ignored the Range header: start over
        start = 0
    length = response.getheader("Content-Length")
    total = start + int(length) if length else None
    if policy.max_bytes and total and total > policy.max_bytes:
        raise _Refused(f"{total:,} bytes, over the limit of {policy.max_bytes:,}")
    with open(part, "ab" if start else "wb") as f, progress_bar(
            total=total, initial=start, unit="B", unit_scale=True, desc=label) as bar:
        received = start
        while not clock.expired:
            # `body_socket`, not kept by http.client once the response owns it.
            connection.body_socket.settimeout(clock.read_timeout())
            chunk = response.read1(chunk_size)  # what has arrived, not a full chunk's wait
            if not chunk:
                break
            received += len(chunk)
            if policy.max_bytes and received > policy.max_bytes:
                raise _Refused(f"over the limit of {policy.max_bytes:,} bytes")
            f.write(chunk)
            bar.update(len(chunk))
    return total


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
