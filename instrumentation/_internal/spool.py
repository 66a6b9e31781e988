"""A bounded on-disk spool of event-record export requests that could not be delivered.

Only the export thread touches it, and only once an export has failed (or a dead process left a
spool behind): the healthy path never touches the disk. What is stored is the request body exactly
as it would have been sent, already scrubbed and OTLP-encoded, one frame per request::

    b"PGS1" | payload length (u32) | event records in it (u32) | crc32 of the payload (u32) | payload

Frames are appended to segment files (``<time_ns>-<pid>-<n>.seg``, so names sort oldest first) in
the process's own directory ``<base>/<pid>-<token>/``, whose ``lock`` file the process holds with
``fcntl.flock`` while it lives. A directory whose lock is free belongs to a process that died (or
shut down with records left): the next process that looks adopts it, moving its segments into its
own directory. A frame cut short by SIGKILL, or whose checksum does not match, is skipped and
counted; the segments after it are sent as usual. Over ``max_bytes`` the oldest segment is dropped
and its records counted. After ``fork`` the child starts a directory of its own; the parent's
segments stay the parent's.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import itertools
import logging
import os
import re
import secrets
import struct
import tempfile
import threading
import time
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from instrumentation._internal.stats import STATS

_logger = logging.getLogger(__name__)

MAGIC = b"PGS1"
HEADER = struct.Struct(">4sIII")
SEGMENT_SUFFIX = ".seg"
LOCK_NAME = "lock"
SEGMENT_BYTES = 1 << 20
"""A segment takes appends up to this size (or an eighth of ``max_bytes`` if smaller): the unit in
which the oldest records are dropped."""
ADOPT_INTERVAL_S = 30.0
"""How often the base directory is looked through for spools of dead processes."""
LOG_INTERVAL_S = 60.0

COUNTER_PREFIX = "event_records"


class Outcome(enum.Enum):
    """What became of one attempt to send a spooled request."""

    DELIVERED = "delivered"
    REJECTED = "rejected"
    """The endpoint answered and refused it for good (4xx other than 408/429): never retried."""
    RETRY = "retry"
    """Connection refused, timeout, 408, 429, 5xx: kept, tried again later."""


def default_spool_dir(service_name: str) -> str:
    """``<system temp>/phonoglyph-spool/<service.name>`` (the name made safe as one path part)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", service_name).lstrip(".") or "unknown_service"
    return os.path.join(tempfile.gettempdir(), "phonoglyph-spool", safe)


def open_spool(enabled: bool, directory: str | None, max_bytes: int, service_name: str) -> Spool | None:
    """The spool under ``directory`` (default :func:`default_spool_dir`), or None with one warning
    when it is switched off or the directory cannot be written."""
    if not enabled:
        _logger.warning(
            "PHONOGLYPH_SPOOL=off: event records that cannot be exported are kept in memory only and dropped"
            " when the export retries give up"
        )
        return None
    base = directory or default_spool_dir(service_name)
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        if not os.access(base, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable", base)
    except OSError as exc:
        _logger.warning(
            "the spool directory %s cannot be used (%s): event records that cannot be exported are kept in"
            " memory only (set PHONOGLYPH_SPOOL_DIR, or PHONOGLYPH_SPOOL=off)",
            base,
            exc,
        )
        return None
    return Spool(base, max_bytes)


@dataclass
class _Segment:
    path: str
    size: int
    """Bytes on disk (what the bound counts)."""
    records: int
    """Event records in the frames not sent yet."""
    offset: int = 0
    """Where the next frame to send starts."""


class _Torn(Exception):
    """The frame at a segment's offset is cut short or does not match its checksum."""

    def __init__(self, records: int, skip_to: int | None) -> None:
        self.records = records
        self.skip_to = skip_to
        """Where the next frame starts when this one could be skipped alone; None: the rest is unreadable."""


class Spool:
    """The process's spool under ``base_dir``; see the module docstring."""

    def __init__(self, base_dir: str, max_bytes: int) -> None:
        self.base_dir = base_dir
        self.max_bytes = max_bytes
        self._segment_bytes = max(1, min(SEGMENT_BYTES, max_bytes // 8))
        self._closed = False
        self._next_log_at = 0.0
        self._dropped_since_log = 0
        self._reset()
        if hasattr(os, "register_at_fork"):
            ref = weakref.WeakMethod(self._after_fork_in_child)
            os.register_at_fork(after_in_child=lambda: (method := ref()) and method())

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self.directory: str | None = None
        self._lock_fd: int | None = None
        self._writer_fd: int | None = None
        """Open for appends on the newest segment while it takes them."""
        self._reader: tuple[str, int] | None = None
        self._segments: list[_Segment] = []
        self._bytes = 0
        self._next_adopt_at = 0.0
        self._names = itertools.count()

    def _after_fork_in_child(self) -> None:
        # Closing the inherited descriptors leaves the parent's lock held (flock belongs to the open
        # file, which the parent keeps); unlocking here would free the parent's directory.
        for fd in (self._lock_fd, self._writer_fd, self._reader[1] if self._reader else None):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._reset()

    # -- state ----------------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Anything waiting to be sent."""
        return bool(self._segments)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def records(self) -> int:
        return sum(segment.records for segment in self._segments)

    # -- writing --------------------------------------------------------------------------------

    def append(self, payload: bytes, records: int) -> bool:
        """Keep one request body; drops the oldest segments to stay within ``max_bytes``. False when
        it was not kept (larger than the whole spool, or the disk refused it: counted as dropped)."""
        frame = HEADER.pack(MAGIC, len(payload), records, zlib.crc32(payload)) + payload
        with self._lock:
            if self._closed or len(frame) > self.max_bytes:
                self._count_dropped(records)
                return False
            try:
                self._ensure_directory()
                while self._segments and self._bytes + len(frame) > self.max_bytes:
                    self._drop_oldest()
                if self._writer_fd is None or self._segments[-1].size >= self._segment_bytes:
                    self._start_segment()
                assert self._writer_fd is not None
                segment = self._segments[-1]
                try:
                    _write_all(self._writer_fd, frame)
                except OSError:
                    os.ftruncate(self._writer_fd, segment.size)  # no half frame left behind
                    raise
            except OSError as exc:
                self._count_dropped(records)
                self._log_rate_limited("event records could not be spooled to %s: %s", self.base_dir, exc)
                return False
            segment.size += len(frame)
            segment.records += records
            self._bytes += len(frame)
        STATS.increment(f"{COUNTER_PREFIX}_spooled", records)
        return True

    def _ensure_directory(self) -> None:
        if self.directory is not None:
            return
        os.makedirs(self.base_dir, mode=0o700, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        # Made under a hidden name and renamed once locked: nobody ever sees it unlocked.
        staging = os.path.join(self.base_dir, f".{name}")
        os.mkdir(staging, 0o700)
        fd = os.open(os.path.join(staging, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        final = os.path.join(self.base_dir, name)
        os.rename(staging, final)
        self._lock_fd, self.directory = fd, final

    def _start_segment(self) -> None:
        assert self.directory is not None
        self._close_writer()
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._names):06d}{SEGMENT_SUFFIX}"
        path = os.path.join(self.directory, name)
        self._writer_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._segments.append(_Segment(path, 0, 0))

    def _close_writer(self) -> None:
        if self._writer_fd is not None:
            os.close(self._writer_fd)
            self._writer_fd = None

    def _remove_head(self) -> _Segment:
        segment = self._segments.pop(0)
        if not self._segments:
            self._close_writer()
        if self._reader is not None and self._reader[0] == segment.path:
            os.close(self._reader[1])
            self._reader = None
        try:
            os.unlink(segment.path)
        except FileNotFoundError:
            pass
        self._bytes -= segment.size
        return segment

    def _drop_oldest(self) -> None:
        segment = self._remove_head()
        self._count_dropped(segment.records)
        self._log_rate_limited(
            "the spool is full (%d bytes): dropped the oldest %d event records (%d dropped in all)",
            self.max_bytes,
            self._dropped_since_log,
            STATS.snapshot().get(f"{COUNTER_PREFIX}_spool_dropped", 0),
        )

    def _count_dropped(self, records: int) -> None:
        if records:
            self._dropped_since_log += records
            STATS.increment(f"{COUNTER_PREFIX}_spool_dropped", records)

    def _log_rate_limited(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next_log_at:
            return
        self._next_log_at = now + LOG_INTERVAL_S
        self._dropped_since_log = 0
        _logger.warning(message, *args)

    # -- sending --------------------------------------------------------------------------------

    def drain(self, send: Callable[[bytes], Outcome], deadline: float) -> bool:
        """Send the spooled requests oldest first until the spool is empty (True), ``send`` says
        RETRY or ``deadline`` (``time.monotonic()``) passes (False)."""
        with self._lock:
            while self._segments:
                if time.monotonic() >= deadline:
                    return False
                segment = self._segments[0]
                if segment.offset >= segment.size:
                    self._remove_head()
                    continue
                try:
                    payload, records, frame_size = self._read_frame(segment)
                except _Torn as torn:
                    STATS.increment(f"{COUNTER_PREFIX}_spool_torn")
                    segment.records = max(0, segment.records - torn.records)
                    if torn.skip_to is None:
                        self._remove_head()
                    else:
                        segment.offset = torn.skip_to
                    continue
                except OSError as exc:
                    self._log_rate_limited("reading the spool segment %s failed: %s", segment.path, exc)
                    self._count_dropped(segment.records)
                    self._remove_head()
                    continue
                outcome = send(payload)
                if outcome is Outcome.RETRY:
                    return False
                segment.offset += frame_size
                segment.records = max(0, segment.records - records)
                STATS.increment(
                    f"{COUNTER_PREFIX}_spool_sent" if outcome is Outcome.DELIVERED else f"{COUNTER_PREFIX}_lost",
                    records,
                )
            return True

    def _read_frame(self, segment: _Segment) -> tuple[bytes, int, int]:
        if self._reader is None or self._reader[0] != segment.path:
            if self._reader is not None:
                os.close(self._reader[1])
                self._reader = None
            self._reader = (segment.path, os.open(segment.path, os.O_RDONLY | os.O_CLOEXEC))
        fd = self._reader[1]
        header = os.pread(fd, HEADER.size, segment.offset)
        if len(header) < HEADER.size:
            raise _Torn(0, None)
        magic, length, records, checksum = HEADER.unpack(header)
        end = segment.offset + HEADER.size + length
        if magic != MAGIC or end > segment.size:
            raise _Torn(0, None)
        payload = os.pread(fd, length, segment.offset + HEADER.size)
        if len(payload) < length:
            raise _Torn(0, None)
        if zlib.crc32(payload) != checksum:
            raise _Torn(records, end)
        return payload, records, HEADER.size + length

    # -- spools of dead processes ---------------------------------------------------------------

    def adopt_orphans(self, force: bool = False) -> int:
        """Move the segments of every spool under ``base_dir`` whose lock is free into this one
        (at most every ``ADOPT_INTERVAL_S`` unless ``force``); returns the event records adopted."""
        now = time.monotonic()
        if self._closed or (not force and now < self._next_adopt_at):
            return 0
        self._next_adopt_at = now + ADOPT_INTERVAL_S
        try:
            names = sorted(os.listdir(self.base_dir))
        except OSError:
            return 0
        own = os.path.basename(self.directory) if self.directory else None
        adopted = 0
        with self._lock:
            for name in names:
                if name.startswith(".") or name == own:
                    continue
                try:
                    adopted += self._adopt(os.path.join(self.base_dir, name))
                except OSError as exc:
                    self._log_rate_limited("adopting the spool %s failed: %s", name, exc)
            if adopted:
                self._segments.sort(key=lambda segment: os.path.basename(segment.path))
                while len(self._segments) > 1 and self._bytes > self.max_bytes:
                    self._drop_oldest()
        if adopted:
            STATS.increment(f"{COUNTER_PREFIX}_spool_adopted", adopted)
            _logger.info("adopted %d spooled event records of a process that ended", adopted)
        return adopted

    def _adopt(self, path: str) -> int:
        if not os.path.isdir(path):
            return 0
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # its process is alive
            segment_names = sorted(name for name in os.listdir(path) if name.endswith(SEGMENT_SUFFIX))
            records = 0
            if segment_names:
                self._ensure_directory()
                assert self.directory is not None
                # The segment being written stays the newest: appends go to a new one from now on.
                self._close_writer()
                for name in segment_names:
                    target = os.path.join(self.directory, name)
                    os.rename(os.path.join(path, name), target)
                    segment = _index(target)
                    self._segments.append(segment)
                    self._bytes += segment.size
                    records += segment.records
            for name in os.listdir(path):  # the lock, and anything half-made
                os.unlink(os.path.join(path, name))
            os.rmdir(path)
            return records
        except FileNotFoundError:
            return 0  # another process adopted it first
        finally:
            os.close(fd)

    # -- the end --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the files and give up the lock: what is left is adopted by a later process."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_writer()
            if self._reader is not None:
                os.close(self._reader[1])
                self._reader = None
            if self.directory is not None and not self._segments:
                try:
                    os.unlink(os.path.join(self.directory, LOCK_NAME))
                    os.rmdir(self.directory)
                except OSError:
                    pass
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _index(path: str) -> _Segment:
    """A segment of another process: its size and the records in its whole frames (headers only)."""
    size = os.stat(path).st_size
    records = 0
    offset = 0
    with open(path, "rb") as file:
        while offset + HEADER.size <= size:
            file.seek(offset)
            magic, length, count, _checksum = HEADER.unpack(file.read(HEADER.size))
            if magic != MAGIC or offset + HEADER.size + length > size:
                break
            records += count
            offset += HEADER.size + length
    return _Segment(path, size, records)
