"""Collector ingest benchmark (issue 12): OTLP/HTTP protobuf + gzip, 512 spans a request, 10% tagged.

    .venv/bin/python bench/collector.py [--duration-s 20] [--concurrency 4]

Processes: the collector (``python -m collector serve``, pinned to CPU 0 with sched_setaffinity,
delivering to the strict fake PostHog), the fake PostHog (tests/fakes/posthog.py) and a separate client
process that sends pre-built requests, each body once (both pinned to CPU 1). Every 200 is a durable ack:
the collector answers only after the derived events are committed to its SQLite outbox.

Phases: (1) throughput, closed loop with N connections, then the collector runs until quiet (its outbox
empty): the collector's CPU from the first request to quiet, divided into the spans sent, is the spans per
CPU-second with every ingested event delivered; (2) ack latency at the target rate (40,000 spans/s, or 80%
of the measured maximum if lower; or each of --latency-rates), open loop, latency counted from the
scheduled send time, again until quiet; (3) the check: the fake PostHog received one event per tagged span
sent, each once. Reported: those figures, the peak RSS (VmHWM) and the targets met. With --py-spy PATH,
every collector thread is sampled in phase 1. ``--stages`` times each ingest stage in-process (gunzip,
decode, map, scrub, outbox put).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
SPANS_PER_REQUEST = 512
TAGGED_RATIO = 0.1
TARGET_SPANS_PER_S = 40_000
TARGET_SPANS_PER_CPU_S = 150_000
TARGET_ACK_P99_MS = 50
TARGET_PEAK_RSS_MB = 150
CLOSED_LOOP_MAX_REQUESTS_PER_S = 320
"""Bodies the closed-loop client builds per second of the phase: each is sent once at most."""
COLLECTOR_CPU = 0
CLIENT_CPU = 1


# -- the client process ---------------------------------------------------------------------


def build_template(seed: int) -> tuple[bytes, bytes]:
    """One request of SPANS_PER_REQUEST spans; every trace id starts with the same 8-byte marker,
    replaced per request so each request maps to new, unique event uuids."""
    sys.path.insert(0, str(ROOT))
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def kv(key, value):
        if isinstance(value, bool):
            return KeyValue(key=key, value=AnyValue(bool_value=value))
        if isinstance(value, int):
            return KeyValue(key=key, value=AnyValue(int_value=value))
        if isinstance(value, float):
            return KeyValue(key=key, value=AnyValue(double_value=value))
        return KeyValue(key=key, value=AnyValue(string_value=value))

    rng = random.Random(seed)
    marker = rng.randbytes(8)
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        [
            kv("service.name", "api"),
            kv("deployment.environment", "bench"),
            kv("service.version", "1.0.0"),
            kv("host.name", "bench-host"),
        ]
    )
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "phonoglyph"
    start = time.time_ns()
    tagged_every = round(1 / TAGGED_RATIO)
    operations = ("stem_separation", "audio_analysis", "render", "file_upload")
    for index in range(SPANS_PER_REQUEST):
        span = scope.spans.add(
            trace_id=marker + rng.randbytes(8), span_id=rng.randbytes(8), parent_span_id=rng.randbytes(8), kind=2
        )
        span.start_time_unix_nano = start + index * 1000
        span.end_time_unix_nano = span.start_time_unix_nano + rng.randint(1_000_000, 900_000_000)
        user = f"user-{rng.randint(1, 5000)}"
        attributes = [
            kv("http.request.method", "GET"),
            kv("http.route", "/api/projects/{project_id}"),
            kv("url.path", f"/api/projects/p{rng.randint(1, 10**6)}"),
            kv("http.response.status_code", 200),
            kv("server.address", "api.internal"),
            kv("network.protocol.version", "1.1"),
            kv("user.id", user),
            kv("session.id", f"s-{user}"),
            kv("user_agent.original", "phonoglyph-web/3.2"),
        ]
        span.name = "GET /api/projects/{project_id}"
        if index % tagged_every == 0:
            operation = operations[index // tagged_every % len(operations)]
            span.name = operation
            attributes += [
                kv("phonoglyph.operation", operation),
                kv("phonoglyph.outcome", "completed"),
                kv("phonoglyph.file.id", f"file-{rng.randint(1, 10**6)}"),
                kv("phonoglyph.project.id", f"proj-{rng.randint(1, 10**5)}"),
                kv("audio.duration_s", rng.uniform(5, 600)),
                kv("audio.sample_rate_hz", 44100),
                kv("audio.channels", 2),
                kv("file.size", rng.randint(10**5, 10**8)),
            ]
        span.attributes.extend(attributes)
    return request.SerializeToString(), marker


def client_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--mode", choices=("closed", "open"), required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s in open mode")
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    raw, marker = build_template(args.seed)
    rng = random.Random(args.seed)
    count = int((args.rate or CLOSED_LOOP_MAX_REQUESTS_PER_S) * args.duration_s * 1.2) + 50
    bodies = [gzip.compress(raw.replace(marker, rng.randbytes(8)), 1) for _ in range(count)]
    print(json.dumps({"ready": True, "raw_bytes": len(raw), "gzip_bytes": len(bodies[0])}), flush=True)
    sys.stdin.readline()  # go

    target = urlsplit(args.url)
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    next_body = iter(bodies)  # each body once: every request's events are new
    deadline = time.monotonic() + args.duration_s

    def send(connection, body) -> int:
        connection.request("POST", "/v1/traces", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status

    def record(status, latency_s):
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(latency_s)

    def closed_worker():
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        while time.monotonic() < deadline and (body := next(next_body, None)) is not None:
            started = time.monotonic()
            record(send(connection, body), time.monotonic() - started)

    work: queue.Queue = queue.Queue()

    def open_worker():
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        while True:
            item = work.get()
            if item is None:
                return
            scheduled, body = item
            record(send(connection, body), time.monotonic() - scheduled)

    started = time.monotonic()
    if args.mode == "closed":
        threads = [threading.Thread(target=closed_worker) for _ in range(args.concurrency)]
        for thread in threads:
            thread.start()
    else:
        threads = [threading.Thread(target=open_worker) for _ in range(args.concurrency)]
        for thread in threads:
            thread.start()
        interval_s = 1 / args.rate
        scheduled = started
        while scheduled < deadline and (body := next(next_body, None)) is not None:
            delay = scheduled - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            work.put((scheduled, body))
            scheduled += interval_s
        for _ in threads:
            work.put(None)
    for thread in threads:
        thread.join()
    elapsed_s = time.monotonic() - started
    latencies.sort()

    def percentile(fraction):
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] if latencies else None

    usage = os.times()
    print(
        json.dumps(
            {
                "elapsed_s": elapsed_s,
                "statuses": statuses,
                "client_cpu_s": usage.user + usage.system,
                "ok_requests": len(latencies),
                "p50_ms": percentile(0.5) * 1000,
                "p99_ms": percentile(0.99) * 1000,
                "max_ms": latencies[-1] * 1000,
            }
        ),
        flush=True,
    )


# -- the driver -----------------------------------------------------------------------------


def pinned(cpu: int):
    return lambda: os.sched_setaffinity(0, {cpu})


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def metric(url: str, name: str) -> float:
    target = urlsplit(url)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    for line in text.splitlines():
        if line.startswith(f"phonoglyph_collector_{name} "):
            return float(line.split()[1])
    return 0.0


def run_client(url: str, *extra: str) -> dict:
    client = subprocess.Popen(
        [sys.executable, __file__, "--client", url, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=pinned(CLIENT_CPU),
        cwd=ROOT,
    )
    ready = json.loads(client.stdout.readline())
    return {"process": client, "ready": ready}


def go(client: dict) -> dict:
    print(json.dumps({"phase_started": time.time()}), flush=True)
    client["process"].stdin.write("go\n")
    client["process"].stdin.flush()
    result = json.loads(client["process"].stdout.readline())
    client["process"].wait(60)
    return result


def stages(requests: int = 200) -> None:
    """In-process cost of each ingest stage for one request (no HTTP, no delivery), in ms of CPU."""
    sys.path.insert(0, str(ROOT))
    from collector.codecs.otlp import SIGNALS, decode_request, gunzip
    from collector.delivery.outbox import Outbox
    from collector.processors.mapping import map_traces
    from collector.processors.scrub import ScrubProcessor

    raw, marker = build_template(1)
    rng = random.Random(7)
    bodies = [gzip.compress(raw.replace(marker, rng.randbytes(8)), 1) for _ in range(requests)]
    signal, scrub = SIGNALS["/v1/traces"], ScrubProcessor()
    outbox = Outbox(Path(tempfile.mkdtemp(prefix="collector-stages-")) / "outbox.db")
    totals = dict.fromkeys(("gunzip", "decode", "map", "scrub", "outbox_put"), 0.0)
    for body in bodies:
        marks = [time.process_time()]
        data = gunzip(body, 2**26)
        marks.append(time.process_time())
        request = decode_request(signal, data, is_json=False)
        marks.append(time.process_time())
        events = map_traces(request, raw_body=data).events
        marks.append(time.process_time())
        scrub.process(events)
        marks.append(time.process_time())
        outbox.put(events)
        marks.append(time.process_time())
        for name, start, end in zip(totals, marks, marks[1:], strict=False):
            totals[name] += end - start
    outbox.close()
    per_request_ms = {name: round(total / requests * 1000, 3) for name, total in totals.items()}
    total_ms = sum(per_request_ms.values())
    print(
        json.dumps(
            {
                "stages_ms_per_request": per_request_ms,
                "total_ms": round(total_ms, 3),
                "spans_per_cpu_s": round(SPANS_PER_REQUEST / total_ms * 1000),
            }
        )
    )


FAKE_POSTHOG = """
import json, sys
from tests.fakes.posthog import FakePostHog
fake = FakePostHog().start()
print(fake.host, flush=True)
for _ in sys.stdin:  # one line asks what it received
    uuids = fake.uuids()
    refused = sum(1 for request in fake.requests if request.status != 200)
    print(json.dumps({"events": len(uuids), "unique_uuids": len(set(uuids)), "refused_requests": refused}), flush=True)
"""


def tagged_per_request() -> int:
    return len(range(0, SPANS_PER_REQUEST, round(1 / TAGGED_RATIO)))


def until_quiet(url: str, timeout_s: float = 300) -> float:
    """Wait until the collector's outbox is empty (every committed event delivered); the seconds waited."""
    started = time.monotonic()
    while metric(url, "outbox_depth") > 0 and time.monotonic() - started < timeout_s:
        time.sleep(0.1)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="py-spy executable: sample all collector threads "
        "during the throughput phase and print where the time goes (pip install py-spy)",
    )
    parser.add_argument("--stages", action="store_true", help="only time each ingest stage in-process")
    parser.add_argument(
        "--latency-rates",
        type=float,
        nargs="+",
        metavar="SPANS_PER_S",
        help="offered loads (spans/s) for the open-loop ack-latency phase, one run each"
        f" (default: the {TARGET_SPANS_PER_S:,} spans/s target, or 80%% of the measured maximum if lower)",
    )
    args = parser.parse_args()
    if args.stages:
        stages()
        return
    if os.cpu_count() < 2:
        sys.exit("needs 2 CPUs: one for the collector, one for the client and the fake PostHog")
    os.sched_setaffinity(0, {CLIENT_CPU})
    workdir = Path(tempfile.mkdtemp(prefix="collector-bench-"))
    fake = subprocess.Popen(
        [sys.executable, "-c", FAKE_POSTHOG],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        preexec_fn=pinned(CLIENT_CPU),
    )
    posthog_host = fake.stdout.readline().strip()
    env = {
        **os.environ,
        "COLLECTOR_ENDPOINT": "127.0.0.1:0",
        "COLLECTOR_DATA_DIR": str(workdir / "data"),
        "POSTHOG_API_KEY": "phc_test",
        "POSTHOG_HOST": posthog_host,
    }
    command = [sys.executable, "-m", "collector", "serve"]
    collector = subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=open(workdir / "stderr", "w"),  # noqa: SIM115 (the child owns it)
        text=True,
        preexec_fn=pinned(COLLECTOR_CPU),
    )
    tagged_sent = 0
    try:
        url = collector.stdout.readline().split("listening on ")[1].split()[0]
        results: dict = {
            "spans_per_request": SPANS_PER_REQUEST,
            "tagged_ratio": TAGGED_RATIO,
            "load_average_at_start": os.getloadavg()[0],
        }

        # (1) throughput, closed loop, then until quiet
        client = run_client(
            url,
            "--mode",
            "closed",
            "--concurrency",
            str(args.concurrency),
            "--duration-s",
            str(args.duration_s),
            "--seed",
            "1",
        )
        results["request_bytes"] = client["ready"]
        cpu_before, delivered_before = proc_cpu_s(collector.pid), metric(url, "delivered_events_total")
        spy = None
        if args.py_spy:
            spy = subprocess.Popen(
                [
                    args.py_spy,
                    "record",
                    "--pid",
                    str(collector.pid),
                    "--threads",
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--duration",
                    str(int(args.duration_s)),
                    "--format",
                    "raw",
                    "--output",
                    str(workdir / "py-spy.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        closed = go(client)
        if spy is not None:
            spy.wait(60)
        ingest_cpu_s = proc_cpu_s(collector.pid) - cpu_before
        delivered_during_ingest = metric(url, "delivered_events_total") - delivered_before
        quiet_after_s = until_quiet(url)
        cpu_s = proc_cpu_s(collector.pid) - cpu_before
        spans = closed["ok_requests"] * SPANS_PER_REQUEST
        tagged_sent += closed["ok_requests"] * tagged_per_request()
        results["throughput"] = {
            "spans_per_s": round(spans / closed["elapsed_s"]),
            "spans_per_collector_cpu_s_all_delivered": round(spans / cpu_s),
            "spans_per_collector_cpu_s_during_ingest": round(spans / ingest_cpu_s),
            "collector_cpu_utilisation": round(ingest_cpu_s / closed["elapsed_s"], 3),
            "events_delivered_during_ingest": delivered_during_ingest,
            "quiet_after_s": round(quiet_after_s, 2),
            "ack_p50_ms": round(closed["p50_ms"], 1),
            "ack_p99_ms": round(closed["p99_ms"], 1),
            "statuses": closed["statuses"],
            "concurrency": args.concurrency,
        }
        print(json.dumps({"throughput": results["throughput"]}), flush=True)

        # (2) ack latency at the target rate (or 80% of the maximum), open loop; or at each --latency-rates
        max_rate = results["throughput"]["spans_per_s"] / SPANS_PER_REQUEST
        rates = [spans_per_s / SPANS_PER_REQUEST for spans_per_s in args.latency_rates or ()]
        rates = rates or [min(TARGET_SPANS_PER_S / SPANS_PER_REQUEST, 0.8 * max_rate)]
        results["latency_at_rate"] = []
        for rate in rates:
            client = run_client(
                url,
                "--mode",
                "open",
                "--rate",
                f"{rate:.2f}",
                "--concurrency",
                "16",
                "--duration-s",
                str(args.duration_s),
                "--seed",
                str(2 + len(results["latency_at_rate"])),
            )
            cpu_before = proc_cpu_s(collector.pid)
            opened = go(client)
            busy_s = proc_cpu_s(collector.pid) - cpu_before
            tagged_sent += opened["ok_requests"] * tagged_per_request()
            latency = {
                "spans_per_s_offered": round(rate * SPANS_PER_REQUEST),
                "spans_per_s_acked": round(opened["ok_requests"] * SPANS_PER_REQUEST / opened["elapsed_s"]),
                "ack_p50_ms": round(opened["p50_ms"], 1),
                "ack_p99_ms": round(opened["p99_ms"], 1),
                "ack_max_ms": round(opened["max_ms"], 1),
                "statuses": opened["statuses"],
                "collector_cpu_utilisation": round(busy_s / opened["elapsed_s"], 3),
                "quiet_after_s": round(until_quiet(url), 2),
            }
            results["latency_at_rate"].append(latency)
            print(json.dumps({"latency_at_rate": latency}), flush=True)
        results["peak_rss_mb"] = round(proc_status_kb(collector.pid, "VmHWM") / 1024, 1)

        # (3) every tagged span sent delivered, once
        fake.stdin.write("count\n")
        fake.stdin.flush()
        received = json.loads(fake.stdout.readline())
        results["delivery_check"] = {
            "tagged_spans_acked": tagged_sent,
            **received,
            "ok": received["events"] == received["unique_uuids"] == tagged_sent and not received["refused_requests"],
        }
        results["load_average_at_end"] = os.getloadavg()[0]
    finally:
        collector.terminate()
        collector.wait(60)
        fake.terminate()
        fake.wait(10)
    print(json.dumps(results, indent=2))
    print_targets(results)
    if args.py_spy:
        print_profile(workdir / "py-spy.txt")


def print_targets(results: dict) -> None:
    check = results["delivery_check"]
    print(
        f"delivered: {check['events']} events ({check['unique_uuids']} distinct uuids) for"
        f" {check['tagged_spans_acked']} tagged spans acked: {'OK' if check['ok'] else 'MISMATCH'}"
    )
    at_target = next(
        (row for row in results["latency_at_rate"] if row["spans_per_s_offered"] == TARGET_SPANS_PER_S), None
    )
    rss_mb = results["peak_rss_mb"]
    rows = [
        (
            "spans per collector CPU-second, every ingested event delivered",
            results["throughput"]["spans_per_collector_cpu_s_all_delivered"],
            f">= {TARGET_SPANS_PER_CPU_S:,}",
            results["throughput"]["spans_per_collector_cpu_s_all_delivered"] >= TARGET_SPANS_PER_CPU_S,
        ),
        (
            f"ack p50 / p99 at {TARGET_SPANS_PER_S:,} spans/s (ms)",
            "not run" if at_target is None else f"{at_target['ack_p50_ms']} / {at_target['ack_p99_ms']}",
            f"p99 <= {TARGET_ACK_P99_MS}",
            at_target is not None and at_target["ack_p99_ms"] <= TARGET_ACK_P99_MS,
        ),
        ("peak RSS (MB)", rss_mb, f"<= {TARGET_PEAK_RSS_MB}", rss_mb <= TARGET_PEAK_RSS_MB),
    ]
    for name, value, target, met in rows:
        print(f"{name}: {value} (target {target}: {'met' if met else 'NOT met'})")


def print_profile(path: Path, top: int = 30) -> None:
    """Inclusive share of busy samples per function (py-spy raw format: 'frame;frame;... count')."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        for frame in set(stack.split(";")[1:]):
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
    print(f"collector profile: {total} busy samples (all threads), inclusive share")
    for frame, count in sorted(inclusive.items(), key=lambda item: -item[1])[:top]:
        print(f"{count / total:7.1%}  {frame}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
    else:
        main()
