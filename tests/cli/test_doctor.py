"""`nofx doctor` as an operator runs it: a real process, this machine's bubblewrap, a real queue and database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.store import PAYLOAD_TO_TEXT, Store
from bot.workspace import isolation

ROOT = Path(__file__).resolve().parents[2]


def doctor(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "NOFX_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "doctor"],
        cwd=tmp_path,
        env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def report(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    lines = [line.split(None, 1) for line in done.stdout.splitlines()]
    return {rest.split(":", 1)[0]: f"{verdict} {rest.split(':', 1)[1].strip()}" for verdict, rest in lines}


def test_doctor_reports_sandbox_queue_database_and_keys(tmp_path: Path, redis_url: str) -> None:
    if not isolation.probe().ok:
        pytest.skip(isolation.probe().reason)
    key = "sk-ant-" + os.urandom(8).hex()
    (tmp_path / "db.sqlite").touch()

    done = doctor(tmp_path, REDIS_URL=redis_url, DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite", ANTHROPIC_API_KEY=key)

    assert done.returncode == 0, done.stdout + done.stderr
    found = report(done)
    assert found["sandbox"].startswith("ok bubblewrap") and "network namespaces" in found["sandbox"]
    assert found["queue"] == "ok REDIS_URL answers"
    assert found["database"] == "ok sqlite answers"
    assert found["model keys"] == "ok ANTHROPIC_API_KEY set"
    assert key not in done.stdout + done.stderr
    assert found["setup network"] == "ok only through nofx's egress proxy: public addresses, ports 80 and 443"
    assert set(found) == {"sandbox", "setup network", "process limit", "queue", "database", "model keys"}


def test_doctor_fails_without_bubblewrap_and_says_how_to_fix_it(tmp_path: Path) -> None:
    done = doctor(tmp_path, PATH=str(tmp_path / "empty"))

    assert done.returncode == 1
    sandbox = report(done)["sandbox"]
    assert sandbox.startswith("FAIL no gate can run here: bubblewrap (`bwrap`) is not installed")
    assert "apt-get install bubblewrap" in sandbox


def test_doctor_warns_when_the_operator_turned_the_sandbox_off(tmp_path: Path) -> None:
    done = doctor(tmp_path, NOFX_SANDBOX="none")

    assert done.returncode == 0
    assert report(done)["sandbox"].startswith("warning NOFX_SANDBOX=none: repository code (gates) runs WITHOUT")


def test_doctor_warns_when_setup_has_the_hosts_network_and_fails_on_a_bad_allow_entry(tmp_path: Path) -> None:
    shared = report(doctor(tmp_path, NOFX_SANDBOX="none", NOFX_SETUP_EGRESS_ALLOW="pypi.internal"))["setup network"]
    host = report(doctor(tmp_path, NOFX_SETUP_EGRESS="host"))["setup network"]
    bad = doctor(tmp_path, NOFX_SANDBOX="none", NOFX_SETUP_EGRESS_ALLOW="*")

    assert shared.startswith("warning NOFX_SANDBOX=none: setup reaches whatever this machine reaches, loopback")
    assert host.startswith("warning NOFX_SETUP_EGRESS=host: setup reaches whatever this machine reaches")
    assert bad.returncode == 1 and report(bad)["setup network"].startswith("FAIL NOFX_SETUP_EGRESS_ALLOW: '*'")


def test_doctor_fails_when_the_queue_does_not_answer(tmp_path: Path) -> None:
    done = doctor(tmp_path, REDIS_URL="redis://127.0.0.1:1/0", NOFX_SANDBOX="none")

    assert done.returncode == 1
    assert report(done)["queue"].startswith("FAIL REDIS_URL does not answer")


def test_doctor_tells_how_to_turn_an_older_json_payload_column_into_text(
    tmp_path: Path, postgres_url: str | None
) -> None:
    """An older nofx made delivery.payload json, which PostgreSQL parses again on every insert; nofx does not
    rewrite the table itself (it holds the intake's writes for as long as that takes), so doctor says how."""
    if postgres_url is None:
        pytest.skip("no PostgreSQL answers on 127.0.0.1:5432 (set NOFX_TEST_POSTGRES_URL to require one)")
    store = Store(postgres_url)
    store.create_all()
    try:
        current = report(doctor(tmp_path, DATABASE_URL=postgres_url, NOFX_SANDBOX="none"))["database"]
        with store.engine.begin() as conn:
            conn.execute(text("ALTER TABLE delivery ALTER COLUMN payload TYPE json USING payload::json"))
        try:
            older = doctor(tmp_path, DATABASE_URL=postgres_url, NOFX_SANDBOX="none")
        finally:
            with store.engine.begin() as conn:
                conn.execute(text(PAYLOAD_TO_TEXT))
    finally:
        store.dispose()

    assert current == "ok postgresql answers"
    assert older.returncode == 0, older.stdout + older.stderr
    warning = report(older)["database"]
    assert warning.startswith("warning delivery.payload is a json column (made by an older nofx)")
    assert f"run `{PAYLOAD_TO_TEXT}`" in warning
