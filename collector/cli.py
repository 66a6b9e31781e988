"""``phonoglyph-collector``: serve, and read what the collector holds (events, funnel, dead letters, stats).

Every command reads the same environment as ``serve`` (``COLLECTOR_DATA_DIR`` above all). The readers
never create a store: on a data directory where no collector has run they say so and exit 1.
Exit codes: 0 ok, 1 runtime failure (a missing store too), 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from collector.config import CollectorConfig, ConfigError

if TYPE_CHECKING:
    from collector.delivery.outbox import Outbox
    from collector.exporters.local import LocalStoreExporter

EXIT_FAILURE = 1
EXIT_CONFIG = 2


class _MissingStore(Exception):
    """A reader found no store where the configuration points: the message says where and why."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = CollectorConfig.from_env()
    except ConfigError as exc:
        print(f"phonoglyph-collector: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return args.run(config, args)
    except _MissingStore as exc:
        print(f"phonoglyph-collector: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phonoglyph-collector",
        description="Serve (OTLP/HTTP in, PostHog events out) and read what the collector holds.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="receive OTLP/HTTP and deliver PostHog events")
    serve.set_defaults(run=_serve)

    events = commands.add_parser("events", help="events in the local store, in arrival order")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--event", help="only events with this name")
    events.add_argument("--json", action="store_true", help="one JSON object a line")
    events.add_argument("--limit", type=int, help="at most this many events (without --follow)")
    events.set_defaults(run=_events)

    funnel = commands.add_parser("funnel", help="distinct ids reaching each step in order, and conversion")
    funnel.add_argument("steps", nargs="+", metavar="STEP")
    funnel.add_argument("--json", action="store_true")
    funnel.set_defaults(run=_funnel)

    dead = commands.add_parser("dead-letters", help="events the exporter refused for good")
    dead.add_argument("action", choices=("list", "replay"))
    dead.add_argument("uuids", nargs="*", help="replay only these (default: all)")
    dead.add_argument("--json", action="store_true")
    dead.add_argument("--limit", type=int, default=100)
    dead.set_defaults(run=_dead_letters)

    alerts = commands.add_parser("alerts", help="alerts firing now, and their history with times and figures")
    alerts.add_argument("--follow", "-f", action="store_true", help="keep printing new firing/resolved entries")
    alerts.add_argument("--json", action="store_true", help="JSON (with --follow: one history entry a line)")
    alerts.add_argument("--limit", type=int, default=50, help="history entries shown (newest first)")
    alerts.set_defaults(run=_alerts)

    stats = commands.add_parser("stats", help="counts per event, outbox depth, dead letters")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(run=_stats)
    return parser


# -- serve ----------------------------------------------------------------------------------


def _serve(config: CollectorConfig, args: argparse.Namespace) -> int:
    from collector.app import build_app
    from collector.delivery.outbox import OutboxError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        listener = _listen(config.host, config.port)
    except OSError as exc:
        print(
            f"phonoglyph-collector: configuration error: COLLECTOR_ENDPOINT: cannot listen on "
            f"{config.host}:{config.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        app = build_app(config)
    except (OutboxError, OSError, sqlite3.Error) as exc:
        listener.close()
        print(
            f"phonoglyph-collector: configuration error: COLLECTOR_DATA_DIR: cannot use {str(config.data_dir)!r}: "
            f"{exc}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    host, port = listener.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    server = _DrainingServer(
        uvicorn.Config(
            app.asgi,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=max(1, int(config.drain_timeout_s)),
        )
    )
    app.start()
    print(
        f"phonoglyph-collector listening on http://{shown_host}:{port} data_dir={config.data_dir.resolve()} "
        f"exporter={app.exporter_name}",
        flush=True,
    )
    try:
        server.run(sockets=[listener])
    finally:
        logging.getLogger("collector").info("draining: flushing deliveries for up to %.1f s", config.drain_timeout_s)
        app.shutdown(config.drain_timeout_s)
    return 0


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


class _DrainingServer(uvicorn.Server):
    """uvicorn's graceful shutdown on SIGTERM/SIGINT (stop accepting, finish in-flight requests), without
    re-raising the signal afterwards, so the outbox can be flushed and closed after the last answer."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


# -- readers --------------------------------------------------------------------------------


def _local_store(config: CollectorConfig) -> LocalStoreExporter:
    from collector.exporters.local import LocalStoreExporter

    if config.posthog_api_key:
        print(
            "phonoglyph-collector: POSTHOG_API_KEY is set: events go to PostHog, the local store is not used",
            file=sys.stderr,
        )
    try:
        return LocalStoreExporter(config.events_path, create=False)
    except FileNotFoundError:
        raise _MissingStore(_missing("local event store", config.events_path, config)) from None


def _outbox(config: CollectorConfig) -> Outbox:
    from collector.delivery.outbox import Outbox

    try:
        # an inspector beside a running collector: never hand the running worker's claimed rows out again
        return Outbox(
            config.outbox_path,
            max_bytes=config.limits.outbox_max_bytes,
            dead_letter_max_rows=config.limits.dead_letter_max_rows,
            dead_letter_max_bytes=config.limits.dead_letter_max_bytes,
            recover_in_flight=False,
            create=False,
        )
    except FileNotFoundError:
        raise _MissingStore(_missing("outbox", config.outbox_path, config)) from None


def _missing(what: str, path: Path, config: CollectorConfig) -> str:
    where = "" if config.data_dir.is_dir() else " (the directory does not exist)"
    return (
        f"no {what} at {path}{where}: has `phonoglyph-collector serve` run with this COLLECTOR_DATA_DIR "
        f"({config.data_dir})?"
    )


def _print_event(event: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {key: event[key] for key in ("uuid", "event", "distinct_id", "timestamp", "properties")},
                ensure_ascii=False,
            ),
            flush=True,
        )
        return
    props = event["properties"]
    keys = ", ".join(f"{key}={props[key]}" for key in sorted(props) if not key.startswith("$"))
    print(f"{event['timestamp']}  {event['event']:<24} {event['distinct_id']:<28} {keys}", flush=True)


def _events(config: CollectorConfig, args: argparse.Namespace) -> int:
    store = _local_store(config)
    try:
        last = 0
        limit = None if args.follow else args.limit
        for event in store.read_events(event=args.event, limit=limit):
            _print_event(event, args.json)
            last = event["seq"]
        while args.follow:
            time.sleep(0.5)
            for event in store.read_events(after_seq=last, event=args.event):
                _print_event(event, args.json)
                last = event["seq"]
    except KeyboardInterrupt:
        pass
    finally:
        store.shutdown()
    return 0


def _alerts(config: CollectorConfig, args: argparse.Namespace) -> int:
    from collector.alerting import read_alerts
    from collector.alerting.report import render_alerts

    firing, history = read_alerts(config.data_dir, history_limit=args.limit)
    if args.json and not args.follow:
        print(json.dumps({"firing": firing, "history": history}, indent=2, default=str))
    elif args.json:
        for entry in reversed(history):
            print(json.dumps(entry, default=str), flush=True)
    else:
        print(render_alerts(firing, history, now=time.time()), end="", flush=True)
    last_id = max((entry["id"] for entry in history), default=0)
    try:
        while args.follow:
            time.sleep(1.0)
            _, new = read_alerts(config.data_dir, history_limit=1000, after_id=last_id)
            for entry in reversed(new):  # oldest first
                if args.json:
                    print(json.dumps(entry, default=str), flush=True)
                else:
                    print(render_alerts([], [entry], now=time.time()).splitlines()[-1], flush=True)
                last_id = max(last_id, entry["id"])
    except KeyboardInterrupt:
        pass
    return 0


def _funnel(config: CollectorConfig, args) -> int:
    store = _local_store(config)
    try:
        steps = store.funnel(args.steps)
    finally:
        store.shutdown()
    if args.json:
        print(json.dumps([step.__dict__ for step in steps]))
        return 0
    print(f"{'step':<28} {'distinct ids':>12} {'from first':>11} {'from previous':>14}")
    for index, step in enumerate(steps, 1):
        print(
            f"{index}. {step.event:<25} {step.count:>12} {step.conversion_from_first:>10.1%}"
            f" {step.conversion_from_previous:>13.1%}"
        )
    return 0


def _dead_letters(config: CollectorConfig, args: argparse.Namespace) -> int:
    outbox = _outbox(config)
    try:
        if args.action == "replay":
            count = outbox.replay_dead_letters(args.uuids or None)
            print(f"{count} dead letters returned to the outbox (a running collector delivers them)")
            return 0
        letters = outbox.dead_letters(limit=args.limit)
    finally:
        outbox.close()
    for letter in letters:
        if args.json:
            print(json.dumps(letter, ensure_ascii=False, default=str))
        else:
            event = letter.get("event") or {}
            name = event.get("event") if isinstance(event, dict) else event
            print(f"{letter['uuid']}  {name}  failed_at={letter['failed_at']}  reason={letter['reason']}")
    return 0


def _stats(config: CollectorConfig, args: argparse.Namespace) -> int:
    outbox = _outbox(config)
    try:
        outbox_stats = {
            "outbox_depth": outbox.depth(),
            "outbox_bytes": outbox.size_bytes(),
            "outbox_oldest_age_s": outbox.oldest_age_s(),
            "dead_letters": outbox.dead_letter_count(),
        }
    finally:
        outbox.close()
    counts = {}
    if not config.posthog_api_key:
        store = _local_store(config)
        try:
            counts = store.event_counts()
        finally:
            store.shutdown()
    if args.json:
        print(json.dumps({"events": counts, **outbox_stats}))
        return 0
    print("events in the local store:" if not config.posthog_api_key else "events: delivered to PostHog")
    for name, count in counts.items():
        print(f"  {name:<28} {count:>8}")
    for key, value in outbox_stats.items():
        print(f"{key}: {value}")
    return 0
