"""Attempts to get a secret past the one redaction filter (`bot.logs.Redactor`), through the real JSON formatter.

Each case logs a secret the way real code ends up logging it (an exception message, a header dict, a git config
dump, a `.env` PEM) and then looks for the secret in every encoding it could travel in.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot import logs
from bot.logs import REDACTED, JsonFormatter, Redactor, RunLogHandler

TOKEN = "ghs_" + "R3dactMe" * 4  # an installation token we were told about
WEBHOOK_SECRET = 'wh"sec\\ret/ü+=&'  # JSON and URL specials
API_TOKEN = "nofx-api-" + "Q9" * 12


@pytest.fixture(scope="module")
def pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def redactor(pem: str) -> Redactor:
    return Redactor([TOKEN, WEBHOOK_SECRET, API_TOKEN, pem])


@pytest.fixture
def logged(redactor: Redactor) -> Iterator[Callable[[], str]]:
    """A logger whose lines go through the JSON formatter into a buffer; returns what was written."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter(redactor))
    logger = logging.getLogger("redaction-test")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield buffer.getvalue
    logger.removeHandler(handler)


def log() -> logging.Logger:
    return logging.getLogger("redaction-test")


def forms(secret: str) -> list[str]:
    """Every way the secret could still be readable in a log line."""
    raw = secret.encode()
    found = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(json.dumps(secret)[1:-1])[1:-1],
        quote(secret, safe=""),
        base64.b64encode(raw).decode().rstrip("="),
        base64.b64encode(b"x-access-token:" + raw).decode().rstrip("=")[20:],
        base64.b64encode(b"git:" + raw).decode()[8:].rstrip("="),
    }
    return [form for form in found if len(form) >= 8]


def assert_hidden(output: str, *secrets: str) -> None:
    for line in output.splitlines():
        json.loads(line)  # still one valid JSON object per line
    for secret in secrets:
        for form in forms(secret):
            assert form not in output, f"{form!r} leaked in {output!r}"


# ---------------------------------------------------------------- known secrets, disguised


def test_token_in_an_exception_message_and_traceback(logged: Callable[[], str]) -> None:
    try:
        raise RuntimeError(f"push refused for token {TOKEN}")
    except RuntimeError:
        log().exception("git push failed")
    output = logged()
    assert "RuntimeError: push refused for token [redacted]" in json.loads(output)["exc"]
    assert_hidden(output, TOKEN)


def test_token_in_a_dict_extra_and_in_bound_context(logged: Callable[[], str]) -> None:
    with logs.bound(repo=f"octo/shop?access={TOKEN}"):
        log().info(
            "request sent",
            extra=logs.fields(headers={"X-Token": TOKEN, TOKEN: "as a key"}, body=TOKEN.encode(), nested=[[TOKEN]]),
        )
    assert_hidden(logged(), TOKEN)


def test_token_split_across_format_args(logged: Callable[[], str]) -> None:
    log().info("token=%s%s (%d chars)", TOKEN[:9], TOKEN[9:], len(TOKEN))
    log().info("%s", [TOKEN[:5], TOKEN[5:]])  # two halves of a list stay two halves: not the secret
    assert_hidden(logged().splitlines()[0], TOKEN)


def test_base64_of_the_basic_credential_git_sends(logged: Callable[[], str]) -> None:
    credential = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    log().info("GIT_CONFIG_VALUE_9=AUTHORIZATION: basic %s", credential)
    log().info("credential was %s", credential)  # no header name to go by
    log().info("url-safe %s", base64.urlsafe_b64encode(f"user:{TOKEN}".encode()).decode())
    output = logged()
    assert_hidden(output, TOKEN)
    assert credential not in output


def test_urls_with_credentials(logged: Callable[[], str]) -> None:
    unknown = "ghs_" + "N0tToldAb0ut" * 3
    log().info("cloning https://x-access-token:%s@github.example/octo/shop.git", unknown)
    log().info("db postgresql://nofx:p@ss:w0rd@db.internal:5432/nofx")
    log().info("queue redis://:hunter2hunter2@127.0.0.1:6379/0 ready")
    output = logged()
    assert unknown not in output and "p@ss" not in output and "w0rd" not in output and "hunter2" not in output
    assert "https://[redacted]@github.example/octo/shop.git" in output
    assert "@db.internal:5432/nofx" in output  # the host is still there to debug with


def test_private_key_with_crlf_escaped_newlines_or_a_single_line(logged: Callable[[], str], pem: str) -> None:
    crlf = pem.replace("\n", "\r\n")
    body_line = pem.splitlines()[3]
    log().info("key from a Windows .env: %s", crlf)
    log().info("key as a JSON string: %s", json.dumps({"key": pem}))
    log().info('key as a dotenv value: GITHUB_PRIVATE_KEY="%s"', pem.replace("\n", "\\n"))
    log().info("invalid base64 in line 4: %r", body_line)
    output = logged()
    assert_hidden(output, pem, crlf, body_line)
    assert "PRIVATE KEY" not in output.replace("-----BEGIN", "")  # no header left dangling without its body


def test_unknown_private_key_with_crlf_is_caught_by_its_shape(pem: str) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    text = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    redacted = Redactor().redact("loaded " + text.strip().replace("\n", "\r\n") + " from disk")
    assert redacted == f"loaded {REDACTED} from disk"


def test_json_escaped_newlines_and_special_characters_in_a_secret(logged: Callable[[], str]) -> None:
    log().info("webhook secret is %s", WEBHOOK_SECRET)
    log().info("payload %s", json.dumps({"secret": WEBHOOK_SECRET}))
    log().info("form %s", f"secret={quote(WEBHOOK_SECRET, safe='')}&x=1")
    assert_hidden(logged(), WEBHOOK_SECRET)


@pytest.mark.parametrize(
    "line",
    [
        "authorization: bearer {t}",
        "AUTHORIZATION: Bearer {t}",
        "Authorization: token {t}",
        "Proxy-Authorization: Basic {t}",
        "headers={{'Authorization': 'Bearer {t}'}}",
        "headers=[('authorization', 'Bearer {t}')]",
        '{{"Authorization": "Bearer {t}"}}',
        "curl -H 'Authorization:Bearer {t}' https://api.github.example",
        "X-Api-Key={t}",
    ],
)
def test_authorization_headers_in_any_casing_or_container(logged: Callable[[], str], line: str) -> None:
    unknown = "0pAqUeV4lue" * 3  # a credential of no known shape, so only the header gives it away
    log().info(line.format(t=unknown))
    output = logged()
    assert unknown not in output
    assert REDACTED in output


def test_tokens_inside_longer_words(logged: Callable[[], str]) -> None:
    unknown = "ghs_" + "GluedT0ken" * 3
    log().info("ids: session_%s, x%s", unknown, TOKEN)
    log().info("ref=refs/heads/a%sb", API_TOKEN)
    output = logged()
    assert unknown not in output
    assert_hidden(output, TOKEN, API_TOKEN)


@pytest.mark.parametrize(
    "credential",
    [
        "ghp_" + "a1B2" * 9,
        "github_pat_11ABCDEFG0" + "x_Y9" * 10,
        "sk-ant-api03-" + "Zz9_" * 10,
        "sk-proj-" + "Ab3" * 12,
        "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiI0MjQyIn0x.c2lnbmF0dXJlc2lnbmF0dXJl",
    ],
)
def test_credentials_nobody_told_us_about_are_caught_by_their_shape(credential: str) -> None:
    assert Redactor().redact(f"got {credential}.") == f"got {REDACTED}."


def test_ordinary_text_stays_readable(redactor: Redactor) -> None:
    for text in [
        "risk-assessment-for-the-release-notes-and-more",
        "the authorization failed: bad credentials",
        "https://github.example/octo/shop/pull/12",
        "git@github.example:octo/shop.git",
        "Bearer tokens are checked in constant time",
        "sha256=0123456789abcdef",
    ]:
        assert redactor.redact(text) == text


def test_redaction_is_idempotent(redactor: Redactor, pem: str) -> None:
    text = f"Authorization: Bearer {TOKEN} url https://u:{WEBHOOK_SECRET}@h/ key {pem}"
    once = redactor.redact(text)
    assert redactor.redact(once) == once
    assert once.count(REDACTED) >= 3


def test_a_secret_added_later_is_redacted_from_then_on(logged: Callable[[], str], redactor: Redactor) -> None:
    fresh = "fresh-installation-token-" + "9" * 12
    redactor.add(fresh)
    log().info("minted %s", fresh)
    assert_hidden(logged(), fresh)


def test_tokens_minted_over_weeks_do_not_pile_up_but_configured_secrets_stay() -> None:
    redactor = Redactor([API_TOKEN])
    tokens = [f"installation-token-{i:04d}-abcdef" for i in range(logs.MAX_ADDED + 10)]
    for token in tokens:
        redactor.add(token)
    assert redactor.redact(f"{API_TOKEN} {tokens[-1]}") == f"{REDACTED} {REDACTED}"
    assert redactor.redact(tokens[0]) == tokens[0]  # long expired: forgotten, so lines stay cheap to redact


# ---------------------------------------------------------------- per-run log files


@pytest.fixture
def root_logging() -> Iterator[None]:
    """`logs.configure` replaces the root handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
def test_lines_bound_to_a_run_are_collected_in_its_worker_log(tmp_path: Path, redactor: Redactor) -> None:
    stream = io.StringIO()
    logs.configure(redactor, stream=stream, data_dir=tmp_path)
    logger = logging.getLogger("bot.runs.engine")

    with logs.bound(delivery_id="d-1"):
        logger.info("routing")  # no run yet: only the stream
        with logs.bound(run_id="run1", step_id="step1"):
            logger.warning("gate failed with %s", TOKEN)
    logger.info("explicit run", extra=logs.fields(run_id="run2"))
    logger.info("hostile run id", extra=logs.fields(run_id="../../etc"))

    [line] = logs.run_log_path(tmp_path, "run1").read_text().splitlines()
    entry = json.loads(line)
    assert (entry["delivery_id"], entry["run_id"], entry["step_id"]) == ("d-1", "run1", "step1")
    assert entry["msg"] == "gate failed with [redacted]"
    assert json.loads(logs.run_log_path(tmp_path, "run2").read_text())["msg"] == "explicit run"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run1", "run2"]
    assert len(stream.getvalue().splitlines()) == 4  # every line still reaches the main stream
    assert any(isinstance(h, RunLogHandler) for h in logging.getLogger().handlers)
