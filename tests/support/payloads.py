"""Real webhook payloads and GitHub's delivery headers, so tests feed the app what GitHub sends."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
import uuid
from functools import cache
from pathlib import Path
from typing import Any

from gidgethub import sansio

from .github_double import APP_ID

WEBHOOKS_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"


@cache
def _read(name: str) -> dict[str, Any]:
    path = WEBHOOKS_DIR / f"{name}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in WEBHOOKS_DIR.glob("*.json")))
        raise FileNotFoundError(f"no webhook fixture {name!r}; known: {known}")
    return json.loads(path.read_text())


def load_payload(name: str, **overrides: Any) -> dict[str, Any]:
    """A fresh copy of `tests/fixtures/webhooks/<name>.json` with `overrides` applied.

    Dict values merge into the payload recursively (`installation={"id": 1}`
    adds or changes only the id); other values replace. A double underscore
    reaches inside: `comment__body="/nofx add a cart"`.
    """
    payload = copy.deepcopy(_read(name))
    for key, value in overrides.items():
        *parents, last = key.split("__")
        target = payload
        for part in parents:
            target = target.setdefault(part, {})
        _merge(target, last, copy.deepcopy(value))
    return payload


def _merge(target: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict) and isinstance(target.get(key), dict):
        for inner_key, inner_value in value.items():
            _merge(target[key], inner_key, inner_value)
    else:
        target[key] = value


def sign(body: bytes, secret: str) -> str:
    """`X-Hub-Signature-256` exactly as GitHub computes it: HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_headers(
    event: str,
    body: bytes,
    secret: str,
    delivery_id: str | None = None,
    *,
    hook_id: int = 123456789,
    target_type: str = "integration",
    target_id: int = APP_ID,
) -> dict[str, str]:
    """The headers of a GitHub App webhook delivery for `body` (target: the App `target_id`)."""
    return {
        "Accept": "*/*",
        "Content-Type": "application/json",
        "User-Agent": f"GitHub-Hookshot/{secrets.token_hex(4)[:7]}",
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Event": event,
        "X-GitHub-Hook-ID": str(hook_id),
        "X-GitHub-Hook-Installation-Target-ID": str(target_id),
        "X-GitHub-Hook-Installation-Target-Type": target_type,
        # GitHub still sends the SHA-1 signature next to the SHA-256 one.
        "X-Hub-Signature": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": sign(body, secret),
    }


def signed_event(event: str, payload: dict[str, Any]) -> sansio.Event:
    """The event gidgethub reads from a delivery of `payload`, signed and verified as GitHub and the app do it.

    For dispatching one feature router directly, without the web process and the queue in between.
    """
    secret = secrets.token_hex(16)
    body = json.dumps(payload).encode()
    headers = {name.lower(): value for name, value in webhook_headers(event, body, secret).items()}  # as servers do
    return sansio.Event.from_http(headers, body, secret=secret)
