"""`nofx doctor`: what this machine gives nofx (sandbox, limits, queue, database, model keys), before a run finds out."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bot.queue import WorkQueue, embedded_url
from bot.settings import Settings
from bot.store import PAYLOAD_TO_TEXT, Store
from bot.workspace import isolation, limits
from bot.workspace.egress import EgressPolicy

OK, WARN, FAIL = "ok", "warning", "FAIL"


@dataclass(frozen=True)
class Finding:
    """One line of the report; `FAIL` makes `nofx doctor` exit 1."""

    verdict: str
    topic: str
    text: str


def doctor(settings: Settings, out: TextIO) -> int:
    """Print one line per concern; exit 1 when something would stop runs (no sandbox, no queue, no database)."""
    checks: list[Callable[[Settings], Finding]] = [_sandbox, _setup_network, _processes, _queue, _database, _models]
    findings = [check(settings) for check in checks]
    for finding in findings:
        print(f"{finding.verdict:<7}  {finding.topic}: {finding.text}", file=out)
    return 1 if any(finding.verdict == FAIL for finding in findings) else 0


def _sandbox(settings: Settings) -> Finding:
    if settings.sandbox == "none":
        return Finding(
            WARN,
            "sandbox",
            "NOFX_SANDBOX=none: repository code (gates) runs WITHOUT isolation, seeing this machine as nofx does",
        )
    probe = isolation.probe()
    if not probe.ok or probe.bwrap is None:
        return Finding(FAIL, "sandbox", f"no gate can run here: {probe.reason}")
    return Finding(
        OK,
        "sandbox",
        f"{_version(probe.bwrap)} ({probe.bwrap}) builds the sandbox here: new user, mount, PID, IPC, UTS and "
        "network namespaces, no capabilities; gates get no network",
    )


def _setup_network(settings: Settings) -> Finding:
    """What `setup` (the repository's install commands) can reach from this machine."""
    try:
        policy = EgressPolicy.from_settings(settings.setup_egress, settings.setup_egress_allow)
    except ValueError as exc:
        return Finding(FAIL, "setup network", str(exc))
    if settings.sandbox == "none" or policy.mode == "host":
        why = "NOFX_SANDBOX=none" if settings.sandbox == "none" else "NOFX_SETUP_EGRESS=host"
        return Finding(
            WARN,
            "setup network",
            f"{why}: setup reaches whatever this machine reaches, loopback included (Redis, the database, "
            "169.254.169.254)",
        )
    if policy.mode == "none":
        return Finding(OK, "setup network", "NOFX_SETUP_EGRESS=none: setup has no network")
    allowed = f"; NOFX_SETUP_EGRESS_ALLOW adds {settings.setup_egress_allow.strip()}" if policy.allow else ""
    return Finding(
        OK, "setup network", f"only through nofx's egress proxy: public addresses, ports 80 and 443{allowed}"
    )


def _processes(_settings: Settings) -> Finding:
    how = limits.process_limit()
    return Finding(WARN if how.startswith("not enforced") else OK, "process limit", how)


def _queue(settings: Settings) -> Finding:
    url = settings.redis_url or embedded_url(settings.data_dir)
    if url is None:
        return Finding(
            OK, "queue", f"REDIS_URL unset: `nofx serve` starts an embedded Valkey under {settings.data_dir}"
        )
    where = "REDIS_URL" if settings.redis_url else "the embedded Valkey of a running `nofx serve`"
    try:
        WorkQueue.from_url(url).ping()
    except Exception as exc:  # any failure to answer, as /readyz sees it; the type is enough to act on
        return Finding(FAIL, "queue", f"{where} does not answer ({type(exc).__name__})")
    return Finding(OK, "queue", f"{where} answers")


def _database(settings: Settings) -> Finding:
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        return Finding(OK, "database", f"SQLite at {url.database}, made by the first `nofx serve`")
    store = Store(settings.database_url)
    try:
        store.ping()
        payload_type = store.payload_column_type()
    except SQLAlchemyError as exc:
        return Finding(FAIL, "database", f"DATABASE_URL does not answer ({type(exc).__name__})")
    finally:
        store.dispose()
    if payload_type == "json":
        return Finding(
            WARN,
            "database",
            "delivery.payload is a json column (made by an older nofx): PostgreSQL parses every delivery's payload "
            f"again as it stores it, a third of its work at intake. At a quiet moment run `{PAYLOAD_TO_TEXT}` "
            "(it rewrites the table and holds deliveries' writes until it is done)",
        )
    return Finding(OK, "database", f"{store.engine.url.get_backend_name()} answers")


def _models(settings: Settings) -> Finding:
    keys = [
        name
        for name, value in (
            ("ANTHROPIC_API_KEY", settings.anthropic_api_key),
            ("OPENAI_API_KEY", settings.openai_api_key),
        )
        if value
    ]
    if not keys:
        return Finding(
            WARN, "model keys", "none set: runs and reviews fail until ANTHROPIC_API_KEY or OPENAI_API_KEY is"
        )
    model = f"; NOFX_MODEL={settings.model}" if settings.model else ""
    return Finding(OK, "model keys", f"{', '.join(keys)} set{model}")


def _version(bwrap: str) -> str:
    try:
        done = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "bubblewrap"
    return done.stdout.strip() or "bubblewrap"
