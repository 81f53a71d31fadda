"""The `nofx` command line: serve, web, worker, replay, rca, doctor."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from bot import deliveries, handled_events, logs
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
    logs.configure(redactor, data_dir=settings.data_dir)  # per-run worker logs, for RCA bundles
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
    worker.add_argument(
        "--lane",
        choices=["all", "dispatch", "work"],
        default="all",
        help="all (default): a dispatch lane process beside the work lane; dispatch/work: only that lane",
    )
    worker.set_defaults(func=_worker)

    local = sub.add_parser("run", help="run a request on a local repository, no GitHub; the result is a branch")
    local.add_argument("--repo", type=Path, required=True, help="path of a git repository")
    local.add_argument("request", help='what to change, e.g. "add a cart"')
    local.add_argument("-v", "--verbose", action="store_true", help="show the logs too (they always go to a file)")
    local.set_defaults(func=_run_locally)

    search = sub.add_parser("search", help="semantic search of a repository's code, runs or artifacts")
    search.add_argument(
        "--repo", default=".", help="a local repository (default .) or owner/name of one this server serves"
    )
    search.add_argument(
        "--kind", choices=["code", "artifacts", "runs"], default="code", help="what to search (default code)"
    )
    search.add_argument("--limit", type=int, default=10, help="results to show (default 10)")
    search.add_argument("query", help="what to look for, in plain words or as a regular expression")
    search.set_defaults(func=_search)

    replay = sub.add_parser("replay", help="route a saved delivery (FILE) or a recorded one (--delivery) again")
    target = replay.add_mutually_exclusive_group(required=True)
    target.add_argument("file", nargs="?", type=Path, help='JSON file: {"event": ..., "payload": {...}}')
    target.add_argument("--delivery", metavar="ID", help="id of a recorded delivery (e.g. a failed one)")
    replay.add_argument("--event", help="event name, when FILE holds a bare payload")
    replay.set_defaults(func=_replay)

    review = sub.add_parser("review", help="review a local diff (base...head); in GitHub Actions, post the review")
    review.add_argument("--repo", type=Path, default=Path("."), help="the local repository (default .)")
    review.add_argument("--base", required=True, help="the ref the change is based on, e.g. origin/main")
    review.add_argument("--head", help="the changed ref (default: the pull request's head in Actions, else HEAD)")
    review.add_argument(
        "--dry-run", action="store_true", help="in GitHub Actions, print the review instead of posting it"
    )
    review.add_argument("-v", "--verbose", action="store_true", help="show the logs too (they always go to a file)")
    review.set_defaults(func=_review)

    rca = sub.add_parser("rca", help="download a run's root-cause bundle (tar.gz) from the running server")
    rca.add_argument("run_id", metavar="RUN_ID")
    rca.add_argument("-o", "--output", type=Path, help="file to write (default nofx-rca-RUN_ID.tar.gz)")
    rca.set_defaults(func=_rca)

    recover = sub.add_parser("recover", help="have GitHub redeliver the deliveries nofx missed (its delivery log)")
    recover.add_argument("--since", default="2h", help="how far back to look: 30m, 2h, 1d (at most 3d; default 2h)")
    recover.set_defaults(func=_recover)

    doctor = sub.add_parser("doctor", help="what this machine gives: sandbox isolation, queue, database, model keys")
    doctor.set_defaults(func=_doctor)
    return parser


def _recover(args: argparse.Namespace, settings: Settings, redactor: logs.Redactor) -> int:
    """Compare GitHub's delivery log with the recorded deliveries; ask GitHub to send the missing ones again."""
    import asyncio

    from bot.github.client import GitHubApp, GitHubAppNotConfigured
    from bot.github.recovery import parse_window, recover
    from bot.models import utcnow
    from bot.store import Store

    try:
        window = parse_window(args.since)
        github = GitHubApp.from_settings(settings, on_secret=redactor.add)
    except (ValueError, GitHubAppNotConfigured) as exc:
        print(f"nofx: {exc}", file=sys.stderr)
        return 2
    store = Store(settings.database_url)

    async def run() -> int:
        async with github:
            found = await recover(github, store, utcnow() - window)
        print(f"{found.listed} deliveries in the last {args.since}; {len(found.missing)} never recorded")
        for guid in found.redelivered:
            print(f"  redelivery requested: {guid}")
        return 0

    try:
        return asyncio.run(run())
    finally:
        store.dispose()


def _doctor(args: argparse.Namespace, settings: Settings, redactor: logs.Redactor) -> int:
    from bot.cli.doctor import doctor

    return doctor(settings, sys.stdout)


def _serve(args: argparse.Namespace, settings: Settings, redactor: logs.Redactor) -> int:
    from bot.cli.serve import serve  # uvicorn and process supervision only load for `serve`

    return serve(settings, host=args.host, workers=args.workers)


def _web(args: argparse.Namespace, settings: Settings, redactor: logs.Redactor) -> int:
    from bot.cli.serve import announce_setup_code
    from bot.cli.web_server import WebProcesses

    web = WebProcesses(_with_queue(settings), args.host)
    web.start()
    app = web.app()
    announce_setup_code(app, web.settings, args.host)
    return web.serve(app)


def _worker(args: argparse.Namespace, settings: Settings, redactor: logs.Redactor) -> int:
    from bot.queue import DISPATCH_LANE
    from bot.worker.lanes import dispatch_lane_process
    from bot.worker.loop import run_worker
    from bot.worker.runtime import Runtime

    # Capacity reserved for deliveries: beside the lane that runs steps and reviews, every worker keeps a
    # process that only acknowledges and routes deliveries, so a busy worker still answers within a second.
    helper = dispatch_lane_process() if args.lane == "all" and not args.burst else None
    runtime = Runtime(_with_queue(settings), redactor=redactor)
    try:
        if args.lane == "dispatch":
            run_worker(runtime, burst=args.burst, lane=DISPATCH_LANE, maintenance=False)
        else:
            run_worker(runtime, burst=args.burst)
    finally:
        runtime.close()
        if helper is not None:
            helper.stop()
    return 0


def _run_locally(args: argparse.Namespace, settings: Settings, redactor: logs.Redactor) -> int:
    from rich.console import Console

    from bot.cli.local_run import LocalRunError, run_locally
    from bot.cli.terminal import use_log_file

    console = Console(stderr=True)
    use_log_file(settings.data_dir, "run", redactor, verbose=args.verbose)  # the terminal shows the live view
    try:
        return run_locally(args.repo, args.request, settings, console)
    except LocalRunError as exc:
        console.print(f"[red]nofx:[/] {exc}")
        return 2


def _replay(args: argparse.Namespace, settings: Settings, redactor: logs.Redactor) -> int:
    settings = _with_queue(settings)
    store = Store(settings.database_url, run_limits=settings.run_limits)
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
    stored, _new = deliveries.record_or_ignore(store, delivery, handled_events.ignore_reason(delivery))
    if stored.status == DeliveryStatus.ignored:
        print(f"recorded {delivery_id} as ignored: {stored.reason}")
        return 0
    deliveries.enqueue(store, queue, delivery_id)
    print(f"queued {event} as delivery {delivery_id}")
    return 0


def _rca(args: argparse.Namespace, settings: Settings, redactor: logs.Redactor) -> int:
    """GET /runs/{id}/rca from NOFX_PUBLIC_URL, else the local server on $PORT, with NOFX_API_TOKEN."""
    import httpx

    from bot.runs import rca

    if not settings.api_token:
        print("nofx: set NOFX_API_TOKEN to the server's API token", file=sys.stderr)
        return 2
    base = settings.public_url or f"http://127.0.0.1:{settings.port}"
    destination = args.output or Path(f"nofx-rca-{args.run_id}.tar.gz")
    headers = {"Authorization": f"Bearer {settings.api_token}"}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            size = rca.download(client, args.run_id, destination)
    except (rca.RcaError, httpx.HTTPError, OSError) as exc:
        print(
            f"nofx: cannot download the bundle of run {args.run_id} from {base}: {redactor.redact(str(exc))}",
            file=sys.stderr,
        )
        return 1
    print(f"wrote {destination} ({size} bytes)")
    return 0


def _search(args: argparse.Namespace, settings: Settings, redactor: logs.Redactor) -> int:
    from bot.cli.search import run  # chroma and the embeddings model load only for `search`

    return run(args, settings)


def _review(args: argparse.Namespace, settings: Settings, redactor: logs.Redactor) -> int:
    from bot.cli.review import run  # the model and rich load only for `review`
    from bot.cli.terminal import use_log_file

    use_log_file(settings.data_dir, "review", redactor, verbose=args.verbose)
    return run(args, settings, redactor)


def _read_saved_delivery(path: Path, event: str | None) -> tuple[str, dict[str, Any], str]:
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
