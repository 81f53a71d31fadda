"""The `.github/nofx.yml` schema: parse a repository's settings strictly, so a typo fails loudly instead of silently.

Pure: the caller fetches the file from the default branch and passes its text (or None when it is missing).
Defaults live on the dataclasses (`RepoConfig()` is the config of a repository without the file); the checks
live in one table, `_SCHEMA`, that mirrors them key for key.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.config_schema import (
    ListOf,
    SchemaError,
    Section,
    Templates,
    Value,
    amount,
    boolean,
    join_key,
    one_of,
    or_null,
    show_value,
    text_matching,
    whole,
)
from bot.config_yaml import YamlRefused, load_yaml
from bot.plan_templates import PlanTemplate
from bot.plans import ALL_TOOLS, glob_regex

CONFIG_PATH = ".github/nofx.yml"
MAX_CONFIG_BYTES = 64 * 1024
MAX_SETUP_COMMANDS = 20

TOOLS = ALL_TOOLS
PERMISSION_ORDER = ("read", "triage", "write", "maintain", "admin")
PROVIDERS = ("anthropic", "openai")
SEVERITIES = ("low", "medium", "high", "critical")

# Variables that belong to the nofx server, not to the repository: a repo config must not be able to hand them
# to its own code. The runner scrubs the environment anyway; refusing here gives the author a clear error.
RESERVED_ENV = frozenset(
    {
        "GITHUB_PRIVATE_KEY",
        "GITHUB_PRIVATE_KEY_PATH",
        "GITHUB_WEBHOOK_SECRET",
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "DATABASE_URL",
        "REDIS_URL",
    }
)
RESERVED_ENV_PREFIXES = ("NOFX_",)

DEFAULT_SKIP_PATHS = (
    "**/*.lock",
    "**/package-lock.json",
    "**/pnpm-lock.yaml",
    "**/go.sum",
    "**/*.min.js",
    "**/*.min.css",
    "vendor/**",
    "node_modules/**",
    "dist/**",
)


# The files whose content decides whether a cached `setup` result still fits: manifests and lockfiles.
DEFAULT_SETUP_CACHE_KEY = (
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "requirements*.txt",
    "poetry.lock",
    "uv.lock",
    "Pipfile.lock",
    "package.json",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "Cargo.toml",
    "Cargo.lock",
    "go.mod",
    "go.sum",
    "Gemfile",
    "Gemfile.lock",
)


class ConfigError(ValueError):
    """The repo config cannot be used; `str()` names the file, the key and what is allowed, for the status comment."""

    def __init__(
        self, key: str, problem: str, allowed: str, *, line: int | None = None, file: str = CONFIG_PATH
    ) -> None:
        self.key = key
        self.problem = problem
        self.allowed = allowed
        self.line = line
        self.file = file
        self.message = f"`{file}`: `{key}` {problem}; allowed: {allowed}"
        super().__init__(self.message)

    def in_file(self, file: str) -> ConfigError:
        """The same error, naming the file the offending key came from (a base config of `_extends`)."""
        return ConfigError(self.key, self.problem, self.allowed, line=self.line, file=file)


@dataclass(frozen=True)
class TriggerConfig:
    """Who and what starts a run: the comment command, the two labels, the minimum repository permission."""

    command: str = "/nofx"
    run_label: str = "nofx"
    review_label: str = "nofx:review"
    min_permission: str = "write"


@dataclass(frozen=True)
class ReviewConfig:
    """How pull requests are reviewed, and which review findings fail the check run."""

    auto: bool = True
    drafts: bool = False
    max_comments: int = 20
    fail_on: str = "high"
    skip_paths: tuple[str, ...] = DEFAULT_SKIP_PATHS
    before_pr: bool = False  # review the run's own diff before its pull request opens; findings go to repair
    outsiders: str = "review"  # pull requests by people below `trigger.min_permission`: review | ignore
    outsider_passes_per_hour: int = 3  # automatic passes per outsider (per installation) in any hour
    max_daily_cost_usd: float = 10.0  # the installation's review spend in 24 h past which outsiders wait

    def skips(self, path: str) -> bool:
        """True if a changed file is generated or vendored and the review should not read it."""
        return any(glob_regex(pattern).fullmatch(path) for pattern in self.skip_paths)


@dataclass(frozen=True)
class GatesConfig:
    """The repository's own check commands; None means that gate is not run.

    The defaults here are all None because a `gates:` section lists exactly the gates to run; a repository
    without the section gets `DEFAULT_GATES` through `RepoConfig`.
    """

    test: str | None = None
    lint: str | None = None
    typecheck: str | None = None

    def command_for(self, tool: str) -> str | None:
        """The command a gate tool runs: only ever the repository's `gates.<kind>`, never text from a plan."""
        value = getattr(self, tool.removeprefix("gate:"), None) if tool.startswith("gate:") else None
        return value if isinstance(value, str) and value.strip() else None


DEFAULT_GATES = GatesConfig(test="pytest -q", lint="ruff check .")


@dataclass(frozen=True)
class PolicyConfig:
    """Limits every run of the repository obeys; an empty `tools_allowed` allows every tool."""

    tools_allowed: tuple[str, ...] = ()
    env_allowed: tuple[str, ...] = ()
    max_cost_usd: float = 2.0
    require_approval_before: tuple[str, ...] = ()


@dataclass(frozen=True)
class CodegenConfig:
    """How long the model may work on a change: its turns (each one model call); the cost is `policy.max_cost_usd`."""

    max_turns: int = 30


@dataclass(frozen=True)
class RepairConfig:
    """How often the model may repair its change after a gate (or the review before the PR) fails it."""

    max_attempts: int = 2


@dataclass(frozen=True)
class CiConfig:
    """The repository's own CI as the last gate; `wait=None` waits when CI ran on the base commit.

    `checks` names the check runs (or workflows) that must pass; empty means every check that ran on the base commit.
    """

    wait: bool | None = None
    timeout_min: int = 30
    max_repairs: int = 2
    checks: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrConfig:
    """How the pull request a run opens looks."""

    draft: bool = False


@dataclass(frozen=True)
class RepoConfig:
    """A repository's nofx settings; `RepoConfig()` is what a repository without `.github/nofx.yml` gets."""

    git_mode: str = "basic"
    planner: str = "template"
    model: str | None = None
    memory_ttl_days: int = 30
    trigger: TriggerConfig = TriggerConfig()
    review: ReviewConfig = ReviewConfig()
    gates: GatesConfig = DEFAULT_GATES
    policy: PolicyConfig = PolicyConfig()
    pr: PrConfig = PrConfig()
    templates: dict[str, PlanTemplate] = field(default_factory=dict)
    ci: CiConfig = CiConfig()
    codegen: CodegenConfig = CodegenConfig()
    repair: RepairConfig = RepairConfig()
    setup: tuple[str, ...] = ()  # commands run before code generation, with network; their result is cached
    setup_cache_key: tuple[str, ...] = DEFAULT_SETUP_CACHE_KEY

    def keys_setup(self, path: str) -> bool:
        """True if a tracked file's content is part of the key a `setup` result is kept under (`setup_cache_key`)."""
        return any(glob_regex(pattern).fullmatch(path) for pattern in self.setup_cache_key)


def parse_config(text: str | None) -> RepoConfig:
    """Parse the file's text into a RepoConfig; a missing or empty file means defaults. Raises ConfigError."""
    return from_mapping(load_mapping(text))


def load_mapping(text: str | None, *, file: str = CONFIG_PATH) -> dict[str, Any]:
    """The file's YAML as a mapping, read strictly but not yet checked against the schema ({} when empty)."""
    try:
        if text is None or not text.strip():
            return {}
        size = len(text.encode("utf-8", errors="surrogatepass"))
        if size > MAX_CONFIG_BYTES:
            raise ConfigError("(file)", f"is {size} bytes", f"at most {MAX_CONFIG_BYTES} bytes (64 KB)")
        try:
            data = copy.deepcopy(_parsed(text))  # the caller may change its copy (`_extends` is popped)
        except YamlRefused as exc:
            raise ConfigError(exc.key, exc.problem, exc.allowed, line=exc.line) from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError("(file)", f"is {show_value(data)} at the top level", _SCHEMA.allowed)
        return data
    except ConfigError as exc:
        raise exc.in_file(file) from None


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> object:
    """A config text parsed once per process: a burst of commands in a repository reads the same text each time."""
    return load_yaml(text)


def from_mapping(data: Mapping[str, Any]) -> RepoConfig:
    """Check a (merged) mapping against the schema and the rules that span keys. Raises ConfigError."""
    try:
        config: RepoConfig = _SCHEMA.parse(dict(data), "")
    except SchemaError as exc:
        raise ConfigError(exc.key, exc.problem, exc.allowed) from None
    _check_consistency(config)
    return config


def from_dict(data: Mapping[str, Any]) -> RepoConfig:
    """Rebuild a config from its `describe()` snapshot (stored on each run), through the same schema."""
    return from_mapping(data)


def permission_reaches(actual: str, minimum: str) -> bool:
    """True if a collaborator permission (`admin` … `read`, or `none`) is at least `minimum`."""
    if minimum not in PERMISSION_ORDER:
        raise ValueError(f"unknown minimum permission {minimum!r}")
    if actual not in PERMISSION_ORDER:  # "none", or a role GitHub adds later: never enough
        return False
    return PERMISSION_ORDER.index(actual) >= PERMISSION_ORDER.index(minimum)


def schema_keys() -> list[tuple[str, str]]:
    """Every key the schema knows, dotted, with what it allows: the source of README's configuration reference."""

    def walk(section: Section, prefix: str) -> Iterator[tuple[str, str]]:
        for name, item in section.fields.items():
            if isinstance(item, Section):
                yield from walk(item, join_key(prefix, name))
            else:
                yield join_key(prefix, name), item.allowed

    return list(walk(_SCHEMA, ""))


def describe(config: RepoConfig) -> dict[str, Any]:
    """The config as plain JSON-ready data, for logs, the audit trail and the plan display."""
    plain: dict[str, Any] = _plain(dataclasses.asdict(config))
    return plain


# --- the schema ------------------------------------------------------------------------------------------------


def _env_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name) is not None
        and name.upper() not in RESERVED_ENV
        and not name.upper().startswith(RESERVED_ENV_PREFIXES)
    )


_LABEL = text_matching("a label name of 1 to 50 characters on one line", r"(?=.*\S)[^\r\n]{1,50}")
_TOOL = one_of(*TOOLS)
_COMMAND = text_matching("a shell command on one line (at most 1000 characters)", r"(?=.*\S)[^\r\n\x00]{1,1000}")
_MODEL = text_matching(
    "`provider:model` with provider anthropic or openai, e.g. anthropic:claude-sonnet-4-6",
    r"(?:anthropic|openai):[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}",
)

_SCHEMA = Section(
    RepoConfig,
    {
        "git_mode": one_of("hidden", "basic", "advanced"),
        "planner": one_of("template", "llm"),
        "model": or_null(_MODEL, "the server's default model"),
        "memory_ttl_days": whole(1, 365),
        "trigger": Section(
            TriggerConfig,
            {
                "command": text_matching(
                    "a command of 2 to 32 characters starting with / and without spaces", r"/\S{1,31}"
                ),
                "run_label": _LABEL,
                "review_label": _LABEL,
                "min_permission": one_of(*PERMISSION_ORDER),
            },
        ),
        "review": Section(
            ReviewConfig,
            {
                "auto": boolean(),
                "drafts": boolean(),
                "max_comments": whole(1, 50),
                "fail_on": one_of(*SEVERITIES, "never"),
                "skip_paths": ListOf(
                    text_matching("a path glob", r"(?!/)[^\r\n\x00]{1,200}"),
                    "a list of repository-relative path globs (`*`, `?`, `**`), e.g. ['**/*.lock', 'dist/**']",
                ),
                "before_pr": boolean(),
                "outsiders": one_of("review", "ignore"),
                "outsider_passes_per_hour": whole(0, 100),
                "max_daily_cost_usd": amount(1000),
            },
        ),
        "gates": Section(
            GatesConfig,
            {
                "test": or_null(_COMMAND, "no test gate"),
                "lint": or_null(_COMMAND, "no lint gate"),
                "typecheck": or_null(_COMMAND, "no typecheck gate"),
            },
        ),
        "policy": Section(
            PolicyConfig,
            {
                "tools_allowed": ListOf(_TOOL, "a list of tools from " + ", ".join(TOOLS) + " ([] allows all)"),
                "env_allowed": ListOf(
                    Value("an environment variable name", _env_name),
                    "a list of environment variable names, not the server's own "
                    "(" + ", ".join(sorted(RESERVED_ENV)) + ", NOFX_*)",
                ),
                "max_cost_usd": amount(100),
                "require_approval_before": ListOf(_TOOL, "a list of tools from " + ", ".join(TOOLS)),
            },
        ),
        "pr": Section(PrConfig, {"draft": boolean()}),
        "templates": Templates(),
        "ci": Section(
            CiConfig,
            {
                "wait": or_null(boolean(), "wait when CI ran on the base commit"),
                "timeout_min": whole(1, 360),
                "max_repairs": whole(0, 5),
                "checks": ListOf(
                    text_matching("a check name on one line", r"(?=.*\S)[^\r\n\x00]{1,200}"),
                    "a list of check run or workflow names ([] means every check that ran on the base commit)",
                ),
            },
        ),
        "codegen": Section(CodegenConfig, {"max_turns": whole(1, 100)}),
        "repair": Section(RepairConfig, {"max_attempts": whole(0, 5)}),
        "setup": Value(
            f"a shell command on one line, or a list of at most {MAX_SETUP_COMMANDS} such commands",
            lambda v: (
                _COMMAND.accepts(v)
                or (isinstance(v, list) and len(v) <= MAX_SETUP_COMMANDS and all(_COMMAND.accepts(c) for c in v))
            ),
            lambda v: (v,) if isinstance(v, str) else tuple(v),
        ),
        "setup_cache_key": ListOf(
            text_matching("a path glob", r"(?!/)(?!.*(?:^|/)\.\.(?:/|$))[^\r\n\x00]{1,200}"),
            "a list of repository-relative paths or globs (`*`, `**`) whose content keys the setup cache",
        ),
    },
)


def _check_consistency(config: RepoConfig) -> None:
    """Rules that span two keys: each would otherwise surface mid-run as a confusing failure."""
    trigger, policy = config.trigger, config.policy
    if trigger.run_label == trigger.review_label:
        raise ConfigError(
            "trigger.review_label",
            f"is {show_value(trigger.review_label)}, the same as `trigger.run_label`",
            "a label different from `trigger.run_label`",
        )
    if policy.tools_allowed and policy.require_approval_before and "manual:approval" not in policy.tools_allowed:
        raise ConfigError(
            "policy.tools_allowed",
            "leaves out manual:approval, which `policy.require_approval_before` needs",
            "a list that includes manual:approval, or [] to allow every tool",
        )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
