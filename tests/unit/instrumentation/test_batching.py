from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import pytest

from instrumentation._internal.batching import ExportQueue
from instrumentation._internal.config import QueueConfig
from instrumentation._internal.stats import STATS


class RecordingExport:
    def __init__(self, succeed: bool = True, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.succeed = succeed
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, batch: Sequence[int]) -> bool:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(list(batch))
        return self.succeed


@pytest.fixture(autouse=True)
def _reset_stats() -> None:
    STATS.reset()


def test_flush_exports_everything_in_batches_of_at_most_max_export_batch_size() -> None:
    export = RecordingExport()
    queue: ExportQueue[int] = ExportQueue(
        export, QueueConfig(max_queue_size=100, max_export_batch_size=4, schedule_delay_s=60), signal="test"
    )
    for item in range(10):
        queue.put(item)
    queue.force_flush()
    queue.shutdown(1)
    assert [item for batch in export.batches for item in batch] == list(range(10))
    assert max(len(batch) for batch in export.batches) <= 4
    assert STATS.snapshot() == {}


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    export = RecordingExport()
    queue: ExportQueue[int] = ExportQueue(
        export, QueueConfig(max_queue_size=3, max_export_batch_size=100, schedule_delay_s=60), signal="test"
    )
    for item in range(5):
        queue.put(item)
    assert STATS.snapshot() == {"test_dropped": 2}
    queue.shutdown(1)
    assert export.batches == [[0, 1, 2]]


def test_a_failed_export_is_counted_with_its_lost_items() -> None:
    queue: ExportQueue[int] = ExportQueue(
        RecordingExport(succeed=False), QueueConfig(schedule_delay_s=60), signal="test"
    )
    queue.put(1)
    queue.put(2)
    queue.shutdown(1)
    assert STATS.snapshot() == {"test_export_failures": 1, "test_lost": 2}


def test_the_worker_exports_a_full_batch_without_a_flush() -> None:
    export = RecordingExport()
    queue: ExportQueue[int] = ExportQueue(
        export, QueueConfig(max_export_batch_size=2, schedule_delay_s=60), signal="test"
    )
    queue.put(1)
    queue.put(2)
    deadline_checks = 500
    while not export.batches and deadline_checks:
        threading.Event().wait(0.01)
        deadline_checks -= 1
    queue.shutdown(1)
    assert export.batches[0] == [1, 2]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_after_fork_the_child_has_its_own_worker_and_an_empty_queue() -> None:
    export = RecordingExport()
    queue: ExportQueue[int] = ExportQueue(
        export, QueueConfig(max_export_batch_size=2, schedule_delay_s=60), signal="test"
    )
    queue.put(100)  # pending in the parent when it forks
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a full batch must be exported by the child's own worker
        try:
            queue.put(1)
            queue.put(2)
            for _ in range(500):
                if export.batches:
                    break
                threading.Event().wait(0.01)
            os.write(write_fd, repr(export.batches).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        child_batches = pipe.read()
    os.waitpid(pid, 0)
    queue.shutdown(1)
    assert child_batches == "[[1, 2]]"
    assert export.batches == [[100]]


def test_exports_run_with_instrumentation_suppressed() -> None:
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    seen: list[bool] = []

    def export(batch: Sequence[int]) -> bool:
        seen.append(is_instrumentation_enabled())
        return True

    queue: ExportQueue[int] = ExportQueue(export, QueueConfig(schedule_delay_s=60), signal="test")
    queue.put(1)
    queue.force_flush()
    queue.shutdown(1)
    assert seen == [False]
    assert is_instrumentation_enabled()


def test_shutdown_does_not_wait_longer_than_its_timeout_for_a_stuck_export() -> None:
    release = threading.Event()
    export = RecordingExport(gate=release)
    queue: ExportQueue[int] = ExportQueue(
        export, QueueConfig(max_export_batch_size=1, schedule_delay_s=60), signal="test"
    )
    queue.put(1)  # a full batch: the worker takes it and blocks in the export
    assert export.entered.wait(5)
    queue.put(2)
    queue.shutdown(0.05)
    assert STATS.snapshot() == {"test_lost": 1}
    release.set()
