"""The `nofx` command line: serve, web, worker, replay."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from dataclasses import replace
from pathlib import Path

from bot import deliveries, events, logs
from bot.models import DeliveryStatus
from bot.queue import WorkQueue, embedded_url
from bot.settings import Settings, SettingsError
from bot.store import Store


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"nofx: {exc}", file=sys.stderr)
        return 2
    redactor = logs.Redactor(settings.secrets)
    logs.configure(redactor)
    return int(args.func(args, settings, redactor) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nofx", description="A GitHub App that turns /nofx commands into PRs.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="web + workers, with embedded defaults (SQLite, Valkey)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    serve.set_defaults(func=_serve)

    web = sub.add_parser("web", help="only the web process (REDIS_URL required)")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    web.set_defaults(func=_web)

    worker = sub.add_parser("worker", help="one worker process (REDIS_URL required)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.set_defaults(func=_worker)

    local = sub.add_parser("run", help="run a request on a local repository, no GitHub; the result is a branch")
    local.add_argument("--repo", type=Path, required=True, help="path of a git repository")
    local.add_argument("request", help='what to change, e.g. "add a cart"')
    local.set_defaults(func=_run_locally)

    replay = sub.add_parser("replay", help="route a saved delivery (FILE) or a recorded one (--delivery) again")
    target = replay.add_mutually_exclusive_group(required=True)
    target.add_argument("file", nargs="?", type=Path, help='JSON file: {"event": ..., "payload": {...}}')
    target.add_argument("--delivery", metavar="ID", help="id of a recorded delivery (e.g. a failed one)")
    replay.add_argument("--event", help="event name, when FILE holds a bare payload")
    replay.set_defaults(func=_replay)
    return parser


def _serve(args: argparse.Namespace, settings: Settings, redactor: logs.Redactor) -> int:
    from bot.serve import serve  # uvicorn and process supervision only load for `serve`

    return serve(settings, host=args.host, workers=args.workers)


def _web(args: argparse.Namespace, settings: Settings, redactor: logs.Redactor) -> int:
    import uvicorn

    from bot.web import create_app

    settings = _with_queue(settings)
    uvicorn.run(create_app(settings), host=args.host, port=settings.port, log_config=None, proxy_headers=True)
    return 0


def _worker(args: argparse.Namespace, settings: Settings, redactor: logs.Redactor) -> int:
    from bot.runtime import Runtime
    from bot.worker import run_worker

    runtime = Runtime(_with_queue(settings), redactor=redactor)
    try:
        run_worker(runtime, burst=args.burst)
    finally:
        runtime.close()
    return 0


def _run_locally(args: argparse.Namespace, settings: Settings, redactor: logs.Redactor) -> int:
    from rich.console import Console

    from bot.local_run import LocalRunError, run_locally

    console = Console(stderr=True)
    logging.getLogger().setLevel(logging.WARNING)  # the terminal shows progress; JSON logs only for trouble
    try:
        return run_locally(args.repo, args.request, settings, console)
    except LocalRunError as exc:
        console.print(f"[red]nofx:[/] {exc}")
        return 2


def _replay(args: argparse.Namespace, settings: Settings, redactor: logs.Redactor) -> int:
    settings = _with_queue(settings)
    store = Store(settings.database_url)
    store.create_all()
    queue = WorkQueue.from_url(settings.redis_url or "")
    if args.delivery:
        if not deliveries.reset_for_replay(store, args.delivery):
            print(f"nofx: delivery {args.delivery} is unknown or still being routed", file=sys.stderr)
            return 1
        queue.enqueue_dispatch(args.delivery)
        print(f"queued delivery {args.delivery} again")
        return 0
    try:
        event, payload, delivery_id = _read_saved_delivery(args.file, args.event)
    except (OSError, ValueError) as exc:
        print(f"nofx: cannot replay {args.file}: {exc}", file=sys.stderr)
        return 1
    delivery = deliveries.describe(delivery_id, event, payload)
    stored, _new = deliveries.record_or_ignore(store, delivery, events.ignore_reason(store, delivery))
    if stored.status == DeliveryStatus.ignored:
        print(f"recorded {delivery_id} as ignored: {stored.reason}")
        return 0
    deliveries.enqueue(store, queue, delivery_id)
    print(f"queued {event} as delivery {delivery_id}")
    return 0


def _read_saved_delivery(path: Path, event: str | None) -> tuple[str, dict, str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("the file must hold a JSON object")
    if event is None:
        if not isinstance(data.get("event"), str) or not isinstance(data.get("payload"), dict):
            raise ValueError('expected {"event": "...", "payload": {...}}, or pass --event with a bare payload')
        event, data = data["event"], data["payload"]
    return event, data, f"replay-{uuid.uuid4()}"


def _with_queue(settings: Settings) -> Settings:
    """Fill in the embedded queue's URL when `serve` runs one for this data dir."""
    if settings.redis_url:
        return settings
    url = embedded_url(settings.data_dir)
    if url is None:
        print("nofx: set REDIS_URL, or start `nofx serve` (which runs an embedded queue)", file=sys.stderr)
        raise SystemExit(2)
    return replace(settings, redis_url=url)


if __name__ == "__main__":
    sys.exit(main())
