"""Process configuration, read once from the environment (and `.env`) by the entry points."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_API_URL = "https://api.github.com"
ENV_FILE = ".env"


@dataclass(frozen=True)
class RunLimits:
    """How many runs may be active (running or waiting) at once: per installation, and in all (0: no limit)."""

    per_installation: int = 2
    total: int = 32


@dataclass(frozen=True)
class SetupCacheLimits:
    """How much of `setup`'s results is kept, on each worker's disk and in the shared store."""

    keep: int = 3  # keys per repository, the most recently used
    total_bytes: int = 4096 * 2**20  # NOFX_SETUP_CACHE_MB: on each worker's disk, and in the shared store
    share_bytes: int = 256 * 2**20  # NOFX_SETUP_SHARE_MB: the largest archive put in the shared store


class SettingsError(ValueError):
    """A configuration value is present but unusable; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the processes need from their environment; built by `from_env`, never global."""

    data_dir: Path
    database_url: str
    redis_url: str | None
    github_api_url: str = DEFAULT_API_URL
    app_id: str | None = None
    private_key: str | None = field(default=None, repr=False)
    private_key_path: Path | None = None  # GITHUB_PRIVATE_KEY_PATH: the sandbox masks it wherever it lies
    webhook_secret: str | None = field(default=None, repr=False)
    api_token: str | None = field(default=None, repr=False)
    metrics_token: str | None = field(default=None, repr=False)  # NOFX_METRICS_TOKEN: /metrics needs it when set
    anthropic_api_key: str | None = field(default=None, repr=False)
    anthropic_base_url: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    model: str | None = None
    public_url: str | None = None
    webhook_proxy_url: str | None = None  # a smee.io-style channel `serve` relays deliveries from
    port: int = 3000
    web_processes: int = 1  # NOFX_WEB_PROCESSES: processes serving the web port (0: one per core)
    memory_keys: tuple[str, ...] = field(default=(), repr=False)  # Fernet keys; the first encrypts, all decrypt
    memory_ttl_days: int = 30  # the longest any thread memory is kept; a repository may ask for less
    run_limits: RunLimits = RunLimits()
    setup_cache: SetupCacheLimits = SetupCacheLimits()
    artifact_store: str | None = None  # s3://bucket/prefix; None: artifacts and checkpoints live in the database
    sandbox: str = "bwrap"  # NOFX_SANDBOX: "none" only when the operator explicitly turns isolation off
    sandbox_paths: tuple[Path, ...] = ()  # NOFX_SANDBOX_PATHS: more toolchain directories, read-only in the sandbox
    setup_egress: str = "proxy"  # NOFX_SETUP_EGRESS: how setup reaches out (proxy | host | none)
    setup_egress_allow: str = ""  # NOFX_SETUP_EGRESS_ALLOW: what the proxy admits beyond public hosts on 80/443
    chroma_url: str | None = None  # CHROMA_URL: a Chroma server; else an embedded one under the data dir
    embeddings_model: str | None = None  # NOFX_EMBEDDINGS_MODEL: openai:<model> or local:all-minilm-l6-v2
    embeddings_window: int | None = None  # NOFX_EMBEDDINGS_WINDOW: tokens an openai:<model> reads of one text
    report_interval_s: float = 1.0  # NOFX_REPORT_INTERVAL_MS: the least time between two edits of a run's comment

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, env_file: Path | None = None) -> Settings:
        """Build settings from `environ` (default: `os.environ`), with `.env` values underneath."""
        env = dict(read_env_file(env_file or Path(ENV_FILE)))
        env.update(os.environ if environ is None else environ)
        data_dir = Path(env.get("NOFX_DATA_DIR") or ".nofx")
        return cls(
            data_dir=data_dir,
            database_url=env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'nofx.db'}",
            redis_url=env.get("REDIS_URL") or None,
            github_api_url=(env.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/"),
            app_id=env.get("GITHUB_APP_ID") or None,
            private_key=_private_key(env),
            private_key_path=Path(env["GITHUB_PRIVATE_KEY_PATH"]) if env.get("GITHUB_PRIVATE_KEY_PATH") else None,
            webhook_secret=env.get("GITHUB_WEBHOOK_SECRET") or None,
            api_token=env.get("NOFX_API_TOKEN") or None,
            metrics_token=env.get("NOFX_METRICS_TOKEN") or None,
            anthropic_api_key=env.get("ANTHROPIC_API_KEY") or None,
            anthropic_base_url=env.get("ANTHROPIC_BASE_URL") or None,
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
            model=env.get("NOFX_MODEL") or None,
            public_url=(env.get("NOFX_PUBLIC_URL") or "").rstrip("/") or None,
            webhook_proxy_url=env.get("WEBHOOK_PROXY_URL") or None,
            port=_port(env.get("PORT") or "3000"),
            web_processes=_count("NOFX_WEB_PROCESSES", env, 1) or os.cpu_count() or 1,
            memory_keys=_memory_keys(env.get("NOFX_MEMORY_KEYS") or ""),
            memory_ttl_days=_ttl_days(env.get("NOFX_MEMORY_TTL_DAYS") or "30"),
            sandbox=_sandbox(env.get("NOFX_SANDBOX") or "bwrap"),
            sandbox_paths=tuple(Path(p) for p in (env.get("NOFX_SANDBOX_PATHS") or "").split(":") if p.strip()),
            setup_egress=_setup_egress(env.get("NOFX_SETUP_EGRESS") or "proxy"),
            setup_egress_allow=env.get("NOFX_SETUP_EGRESS_ALLOW") or "",
            artifact_store=env.get("NOFX_ARTIFACT_STORE") or None,
            chroma_url=(env.get("CHROMA_URL") or "").rstrip("/") or None,
            embeddings_model=env.get("NOFX_EMBEDDINGS_MODEL") or None,
            embeddings_window=_count("NOFX_EMBEDDINGS_WINDOW", env, 0) or None,
            report_interval_s=_report_interval_ms(env.get("NOFX_REPORT_INTERVAL_MS") or "1000") / 1000,
            run_limits=RunLimits(
                per_installation=_count("NOFX_MAX_ACTIVE_RUNS_PER_INSTALLATION", env, RunLimits.per_installation),
                total=_count("NOFX_MAX_ACTIVE_RUNS", env, RunLimits.total),
            ),
            setup_cache=SetupCacheLimits(
                total_bytes=_count("NOFX_SETUP_CACHE_MB", env, SetupCacheLimits.total_bytes // 2**20) * 2**20,
                share_bytes=_count("NOFX_SETUP_SHARE_MB", env, SetupCacheLimits.share_bytes // 2**20) * 2**20,
            ),
        )

    @property
    def app_configured(self) -> bool:
        """True once the App's id and private key are known (the setup page is no longer needed)."""
        return bool(self.app_id and self.private_key)

    def run_url(self, run_id: str) -> str | None:
        """The run page people follow from GitHub, when the public address is known."""
        return f"{self.public_url}/runs/{run_id}" if self.public_url else None

    @property
    def secrets(self) -> list[str]:
        """Every secret value this process holds, for the log redactor."""
        values = [
            self.private_key,
            self.webhook_secret,
            self.api_token,
            self.anthropic_api_key,
            self.openai_api_key,
            *self.memory_keys,
            urlsplit(self.redis_url).password if self.redis_url else None,
        ]
        return [v for v in values if v]


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a dotenv file (`KEY=value`, optional quotes, `\\n` escapes in double quotes)."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace("\\n", "\n").replace('\\"', '"')
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        values[key] = value
    return values


def _private_key(env: Mapping[str, str]) -> str | None:
    if env.get("GITHUB_PRIVATE_KEY"):
        return env["GITHUB_PRIVATE_KEY"].replace("\\n", "\n")
    path = env.get("GITHUB_PRIVATE_KEY_PATH")
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"GITHUB_PRIVATE_KEY_PATH cannot be read: {exc.strerror}") from exc


def _memory_keys(value: str) -> tuple[str, ...]:
    """NOFX_MEMORY_KEYS: comma-separated Fernet keys (32 url-safe base64 bytes each), checked here so a typo
    fails at start rather than when the first conversation is stored."""
    keys = tuple(key.strip() for key in value.split(",") if key.strip())
    for position, key in enumerate(keys, start=1):
        try:
            raw = base64.urlsafe_b64decode(key.encode("ascii"))
        except ValueError:  # binascii.Error and UnicodeEncodeError are ValueErrors
            raw = b""
        if len(raw) != 32:
            raise SettingsError(
                f"NOFX_MEMORY_KEYS: key {position} is not a Fernet key "
                "(make one with `python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
            )
    return keys


def _ttl_days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise SettingsError(f"NOFX_MEMORY_TTL_DAYS must be a number of days, got {value!r}") from None
    if not 1 <= days <= 3650:
        raise SettingsError(f"NOFX_MEMORY_TTL_DAYS must be between 1 and 3650, got {days}")
    return days


def _report_interval_ms(value: str) -> int:
    """At most a minute: the queue keeps when a run may next be shown for that long."""
    try:
        interval = int(value)
    except ValueError:
        raise SettingsError(f"NOFX_REPORT_INTERVAL_MS must be a number of milliseconds, got {value!r}") from None
    if not 0 <= interval <= 60_000:
        raise SettingsError(f"NOFX_REPORT_INTERVAL_MS must be between 0 and 60000, got {interval}")
    return interval


def _sandbox(value: str) -> str:
    """NOFX_SANDBOX: `bwrap`, or `none` spelled out; anything else is a typo that must not mean "no isolation"."""
    if value not in ("bwrap", "none"):
        raise SettingsError(f"NOFX_SANDBOX must be `bwrap` (the default) or `none` (no isolation), got {value!r}")
    return value


def _setup_egress(value: str) -> str:
    """NOFX_SETUP_EGRESS: `proxy` (public hosts only), `host` (the worker's whole network) or `none`."""
    if value not in ("proxy", "host", "none"):
        raise SettingsError(f"NOFX_SETUP_EGRESS must be `proxy` (the default), `host` or `none`, got {value!r}")
    return value


def _count(name: str, env: Mapping[str, str], default: int) -> int:
    value = env.get(name) or str(default)
    try:
        count = int(value)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {value!r}") from None
    if count < 0:
        raise SettingsError(f"{name} must be 0 or more, got {count}")
    return count


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise SettingsError(f"PORT must be a number, got {value!r}") from None
    if not 0 < port < 65536:
        raise SettingsError(f"PORT must be between 1 and 65535, got {port}")
    return port
