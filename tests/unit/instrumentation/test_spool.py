"""The on-disk spool of event-record requests: bounded, oldest first, torn frames skipped, spools of
dead processes adopted, a directory per process (rebuilt after fork)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from instrumentation._internal import spool as spool_module
from instrumentation._internal.spool import HEADER, Outcome, Spool, default_spool_dir, open_spool
from instrumentation._internal.stats import STATS

REPO_ROOT = Path(__file__).resolve().parents[3]
FOREVER = float("inf")


@pytest.fixture(autouse=True)
def clean_stats() -> Iterator[None]:
    STATS.reset()
    yield
    STATS.reset()


def _payload(index: int, size: int = 100) -> bytes:
    return f"request-{index:04d}-".encode().ljust(size, b".")


def _drain_all(spool: Spool) -> list[bytes]:
    sent: list[bytes] = []

    def send(payload: bytes) -> Outcome:
        sent.append(payload)
        return Outcome.DELIVERED

    assert spool.drain(send, FOREVER)
    return sent


def _segments(directory: str | None) -> list[Path]:
    assert directory is not None
    return sorted(Path(directory).glob("*.seg"))


def test_requests_are_sent_oldest_first_and_the_directory_goes_when_empty(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), max_bytes=1 << 20)
    assert spool.directory is None  # nothing on disk before the first append
    for index in range(5):
        assert spool.append(_payload(index), records=3)
    assert spool.pending and spool.records == 15
    assert _drain_all(spool) == [_payload(index) for index in range(5)]
    assert not spool.pending and spool.size_bytes == 0
    assert STATS.snapshot() == {"event_records_spooled": 15, "event_records_spool_sent": 15}
    spool.close()
    assert list(tmp_path.iterdir()) == []


def test_a_retry_keeps_the_request_and_later_ones_behind_it(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), max_bytes=1 << 20)
    for index in range(3):
        spool.append(_payload(index), records=1)
    answers = iter([Outcome.DELIVERED, Outcome.RETRY])
    sent: list[bytes] = []

    def send(payload: bytes) -> Outcome:
        sent.append(payload)
        return next(answers)

    assert not spool.drain(send, FOREVER)
    assert sent == [_payload(0), _payload(1)]
    assert _drain_all(spool) == [_payload(1), _payload(2)]


def test_a_rejected_request_is_counted_lost_and_not_retried(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), max_bytes=1 << 20)
    spool.append(_payload(0), records=4)
    assert spool.drain(lambda payload: Outcome.REJECTED, FOREVER)
    assert STATS.snapshot()["event_records_lost"] == 4 and not spool.pending


def test_over_the_bound_the_oldest_records_are_dropped_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    max_bytes = 4096  # segments of 512 bytes: each 100-byte request (116 with its header) takes one segment of ~5
    spool = Spool(str(tmp_path), max_bytes=max_bytes)
    with caplog.at_level(logging.WARNING, logger=spool_module.__name__):
        for index in range(200):
            spool.append(_payload(index), records=2)
            assert spool.size_bytes <= max_bytes
            assert sum(path.stat().st_size for path in _segments(spool.directory)) == spool.size_bytes
    kept = _drain_all(spool)
    assert kept == [_payload(index) for index in range(200 - len(kept), 200)]  # the newest, in order
    stats = STATS.snapshot()
    assert stats["event_records_spool_dropped"] == 2 * (200 - len(kept))
    assert stats["event_records_spool_dropped"] + stats["event_records_spool_sent"] == stats["event_records_spooled"]
    assert len([r for r in caplog.records if "spool is full" in r.getMessage()]) == 1


def test_a_request_larger_than_the_whole_spool_is_dropped_and_counted(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), max_bytes=256)
    assert not spool.append(b"x" * 300, records=7)
    assert STATS.snapshot() == {"event_records_spool_dropped": 7} and not spool.pending


def test_a_frame_with_a_wrong_checksum_is_skipped_alone(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), max_bytes=1 << 20)
    for index in range(3):
        spool.append(_payload(index), records=1)
    [segment] = _segments(spool.directory)
    data = bytearray(segment.read_bytes())
    data[HEADER.size + 100 + HEADER.size + 5] ^= 0xFF  # a byte of the second payload
    segment.write_bytes(bytes(data))
    assert _drain_all(spool) == [_payload(0), _payload(2)]
    assert STATS.snapshot()["event_records_spool_torn"] == 1


# -- other processes -----------------------------------------------------------------------------

WRITER = r"""
import os, signal, sys
from instrumentation._internal.spool import Spool
spool = Spool(sys.argv[1], max_bytes=1 << 20)
for index in range(int(sys.argv[2])):
    spool.append(f"request-{index:04d}-".encode().ljust(100, b"."), records=1)
if sys.argv[3] == "torn":  # SIGKILL in the middle of a write: a header and half a payload
    segment = sorted(p for p in os.listdir(spool.directory) if p.endswith(".seg"))[-1]
    with open(os.path.join(spool.directory, segment), "ab") as file:
        file.write(b"PGS1" + (100).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\0\0\0\0" + b"half")
print(spool.directory, flush=True)
if sys.argv[3] == "wait":
    sys.stdin.read()
os.kill(os.getpid(), signal.SIGKILL)
"""


def _writer(base: Path, count: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(base), str(count), mode],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_the_spool_of_a_killed_process_is_adopted_and_its_torn_write_skipped(tmp_path: Path) -> None:
    first = _writer(tmp_path, 3, "torn")
    second = _writer(tmp_path, 2, "clean")
    for process in (first, second):
        process.communicate(timeout=60)
        assert process.returncode == -signal.SIGKILL
    spool = Spool(str(tmp_path), max_bytes=1 << 20)
    assert spool.adopt_orphans() == 5
    assert spool.adopt_orphans(force=True) == 0  # adopted once
    assert [entry.name for entry in tmp_path.iterdir()] == [os.path.basename(spool.directory or "")]
    sent = _drain_all(spool)
    assert sorted(sent) == sorted([_payload(0), _payload(1), _payload(2), _payload(0), _payload(1)])
    stats = STATS.snapshot()
    assert stats["event_records_spool_adopted"] == 5 and stats["event_records_spool_torn"] == 1


def test_the_spool_of_a_live_process_is_left_alone(tmp_path: Path) -> None:
    live = _writer(tmp_path, 2, "wait")
    try:
        assert live.stdout is not None
        directory = live.stdout.readline().strip()
        spool = Spool(str(tmp_path), max_bytes=1 << 20)
        assert spool.adopt_orphans(force=True) == 0
        assert len(_segments(directory)) == 1
    finally:
        live.communicate(input="", timeout=60)
    assert spool.adopt_orphans(force=True) == 2  # killed now: adopted


def test_a_spool_closed_with_records_left_is_adopted_by_the_next_process(tmp_path: Path) -> None:
    first = Spool(str(tmp_path), max_bytes=1 << 20)
    first.append(_payload(0), records=1)
    first.close()
    second = Spool(str(tmp_path), max_bytes=1 << 20)
    assert second.adopt_orphans() == 1
    assert _drain_all(second) == [_payload(0)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_after_fork_the_child_spools_in_a_directory_of_its_own_and_the_parent_keeps_its_lock(tmp_path: Path) -> None:
    parent = Spool(str(tmp_path), max_bytes=1 << 20)
    parent.append(_payload(0), records=1)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its directory and whether it could take the parent's spool
        try:
            child_spool_ok = not parent.pending
            parent.append(_payload(1), records=1)
            adopted = parent.adopt_orphans(force=True)
            os.write(write_end, f"{child_spool_ok} {adopted} {parent.directory}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        child_empty, child_adopted, child_directory = reader.read().split()
    os.waitpid(pid, 0)
    assert child_empty == "True" and child_adopted == "0"  # the parent is alive: its spool stays its own
    assert child_directory != parent.directory
    assert _drain_all(parent) == [_payload(0)]
    # the child exited without closing: its spool is adopted
    assert Spool(str(tmp_path), max_bytes=1 << 20).adopt_orphans(force=True) == 1


# -- where it lives ------------------------------------------------------------------------------


def test_the_default_directory_is_per_service_under_the_system_temp_dir() -> None:
    assert default_spool_dir("api").endswith(os.path.join("phonoglyph-spool", "api"))
    assert default_spool_dir("../../etc").endswith(os.path.join("phonoglyph-spool", "_.._etc"))


def test_off_or_an_unusable_directory_warns_once_and_gives_no_spool(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    with caplog.at_level(logging.WARNING, logger=spool_module.__name__):
        assert open_spool(False, str(tmp_path), 1 << 20, "api") is None
        assert open_spool(True, str(not_a_directory / "spool"), 1 << 20, "api") is None
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("PHONOGLYPH_SPOOL=off")
    assert messages[1].startswith(f"the spool directory {not_a_directory / 'spool'} cannot be used")
    assert list(tmp_path.iterdir()) == [not_a_directory]
