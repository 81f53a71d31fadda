"""`.github/nofx.yml`: defaults, the DESIGN example, and an error for every way a file can be wrong."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bot import config_schema, repo_config
from bot.repo_config import (
    DEFAULT_GATES,
    DEFAULT_SKIP_PATHS,
    MAX_CONFIG_BYTES,
    ConfigError,
    GatesConfig,
    PolicyConfig,
    PrConfig,
    RepoConfig,
    ReviewConfig,
    TriggerConfig,
    describe,
    from_dict,
    parse_config,
    permission_reaches,
)

DESIGN_EXAMPLE = """\
git_mode: basic            # hidden | basic | advanced: wording of commits and comments, git ops allowed
trigger: {command: /nofx, run_label: nofx, review_label: "nofx:review", min_permission: write}
review: {auto: true, drafts: false, max_comments: 20, fail_on: high}
gates: {test: "pytest -q", lint: "ruff check ."}
policy: {tools_allowed: [], max_cost_usd: 2.0, require_approval_before: [git_pr]}
model: anthropic:claude-sonnet-4-5
"""


@pytest.mark.parametrize("text", [None, "", "   \n\t\n", "# nofx settings\n# git_mode: advanced\n", "---\n", "~\n"])
def test_missing_or_empty_file_means_defaults(text: str | None) -> None:
    assert parse_config(text) == RepoConfig()


def test_defaults() -> None:
    config = RepoConfig()
    assert (config.git_mode, config.planner, config.model, config.memory_ttl_days) == ("basic", "template", None, 30)
    assert config.trigger == TriggerConfig("/nofx", "nofx", "nofx:review", "write")
    assert config.review == ReviewConfig(True, False, 20, "high", DEFAULT_SKIP_PATHS)
    assert config.gates == GatesConfig(test="pytest -q", lint="ruff check .", typecheck=None)
    assert config.policy == PolicyConfig((), (), 2.0, ())  # the pull request is the review: no approval before it
    assert config.pr == PrConfig(draft=False)
    assert (config.codegen.max_turns, config.repair.max_attempts) == (30, 2)


def test_design_example_parses_to_its_values() -> None:
    config = parse_config(DESIGN_EXAMPLE)
    # DESIGN.md's example asks for an approval before the pull request; the default no longer does.
    policy = dataclasses.replace(RepoConfig().policy, require_approval_before=("git_pr",))
    assert config == dataclasses.replace(RepoConfig(), model="anthropic:claude-sonnet-4-5", policy=policy)


def test_every_key_given() -> None:
    text = """\
git_mode: advanced
planner: llm
model: openai:gpt-4o-mini
memory_ttl_days: 365
trigger:
  command: /bot
  run_label: "bot: run"
  review_label: "bot: review"
  min_permission: maintain
review:
  auto: false
  drafts: true
  max_comments: 50
  fail_on: never
  skip_paths: ["docs/**", "**/*.snap", "docs/**"]
gates:
  test: npm test
  lint: null
  typecheck: npx tsc --noEmit
policy:
  tools_allowed: [codegen, workspace:write, gate:test, manual:approval, git_pr]
  env_allowed: [NODE_ENV, CI]
  max_cost_usd: 100
  require_approval_before: [git_pr, git_ops]
pr:
  draft: true
"""
    assert parse_config(text) == RepoConfig(
        git_mode="advanced",
        planner="llm",
        model="openai:gpt-4o-mini",
        memory_ttl_days=365,
        trigger=TriggerConfig("/bot", "bot: run", "bot: review", "maintain"),
        review=ReviewConfig(False, True, 50, "never", ("docs/**", "**/*.snap")),
        gates=GatesConfig(test="npm test", lint=None, typecheck="npx tsc --noEmit"),
        policy=PolicyConfig(
            ("codegen", "workspace:write", "gate:test", "manual:approval", "git_pr"),
            ("NODE_ENV", "CI"),
            100.0,
            ("git_pr", "git_ops"),
        ),
        pr=PrConfig(draft=True),
    )


def test_a_gates_section_lists_exactly_the_gates_to_run() -> None:
    assert parse_config("gates: {test: npm test}").gates == GatesConfig(test="npm test")
    assert parse_config("gates: {}").gates == GatesConfig()
    assert parse_config("review: {auto: false}").gates == DEFAULT_GATES


def test_other_sections_keep_defaults_for_absent_keys() -> None:
    config = parse_config("review: {fail_on: critical}\ntrigger:\n  # min_permission: admin\n")
    assert config.review == dataclasses.replace(ReviewConfig(), fail_on="critical")
    assert config.trigger == TriggerConfig()


def test_an_int_is_a_valid_cost() -> None:
    cost = parse_config("policy: {max_cost_usd: 3}").policy.max_cost_usd
    assert cost == 3.0
    assert isinstance(cost, float)


# key, text, what the message must say about the value, what it must list as allowed
ERRORS = [
    ("revew", "revew: {auto: false}", "not a known key (did you mean `review`?)", "git_mode, planner, model"),
    ("review.max_coments", "review: {max_coments: 3}", "did you mean `review.max_comments`?", "auto, drafts"),
    ("pr.title", "pr: {title: x}", "not a known key", "the keys draft"),
    ("7", "7: x", "not a known key", "git_mode"),
    ("git_mode", "git_mode: expert", "'expert'", "one of hidden, basic, advanced"),
    ("git_mode", "git_mode: off", "false", "one of hidden, basic, advanced"),
    ("planner", "planner: gpt", "'gpt'", "one of template, llm"),
    ("review.fail_on", "review: {fail_on: severe}", "'severe'", "one of low, medium, high, critical, never"),
    ("trigger.min_permission", "trigger: {min_permission: none}", "'none'", "read, triage, write, maintain, admin"),
    ("review.max_comments", "review: {max_comments: true}", "true", "a whole number from 1 to 50"),
    ("review.max_comments", "review: {max_comments: 51}", "51", "a whole number from 1 to 50"),
    ("review.max_comments", "review: {max_comments: 0}", "0", "a whole number from 1 to 50"),
    ("review.max_comments", "review: {max_comments: 2.5}", "2.5", "a whole number from 1 to 50"),
    ("review.max_comments", "review: {max_comments: '20'}", "'20'", "a whole number from 1 to 50"),
    ("review.max_comments", "review: {max_comments: }", "null", "a whole number from 1 to 50"),
    ("memory_ttl_days", "memory_ttl_days: 2024-01-01", "2024-01-01 (a date)", "from 1 to 365"),
    ("memory_ttl_days", "memory_ttl_days: 366", "366", "from 1 to 365"),
    ("review.auto", "review: {auto: 1}", "1", "true or false"),
    ("review.auto", "review: {auto: 'yes'}", "'yes'", "true or false"),
    ("pr.draft", "pr: {draft: null}", "null", "true or false"),
    ("policy.max_cost_usd", "policy: {max_cost_usd: 0}", "0", "a number above 0 and at most 100"),
    ("policy.max_cost_usd", "policy: {max_cost_usd: 100.5}", "100.5", "at most 100"),
    ("policy.max_cost_usd", "policy: {max_cost_usd: -1}", "-1", "above 0"),
    ("policy.max_cost_usd", "policy: {max_cost_usd: .nan}", "nan", "above 0"),
    ("policy.max_cost_usd", "policy: {max_cost_usd: .inf}", "inf", "at most 100"),
    ("policy.max_cost_usd", "policy: {max_cost_usd: true}", "true", "a number"),
    ("policy.max_cost_usd", "policy: {max_cost_usd: $2}", "'$2'", "a number"),
    ("policy.tools_allowed", "policy: {tools_allowed: [codegen, git_push]}", "'git_push' (item 2)", "git_pr"),
    ("policy.tools_allowed", "policy: {tools_allowed: codegen}", "'codegen'", "a list of tools from codegen"),
    ("policy.require_approval_before", "policy: {require_approval_before: [deploy]}", "'deploy'", "git_ops"),
    ("policy.env_allowed", "policy: {env_allowed: [1BAD]}", "'1BAD'", "environment variable names"),
    ("policy.env_allowed", "policy: {env_allowed: [GITHUB_TOKEN]}", "'GITHUB_TOKEN'", "not the server's own"),
    ("policy.env_allowed", "policy: {env_allowed: [nofx_api_token]}", "'nofx_api_token'", "NOFX_*"),
    ("policy.env_allowed", "policy: {env_allowed: [OPENAI_API_KEY]}", "'OPENAI_API_KEY'", "not the server's own"),
    ("trigger.command", "trigger: {command: nofx}", "'nofx'", "starting with /"),
    ("trigger.command", "trigger: {command: /}", "'/'", "2 to 32 characters"),
    ("trigger.command", "trigger: {command: /do it}", "'/do it'", "without spaces"),
    ("trigger.command", f"trigger: {{command: /{'x' * 32}}}", "'/xxx", "2 to 32 characters"),
    ("trigger.run_label", "trigger: {run_label: ''}", "''", "a label name of 1 to 50 characters"),
    ("trigger.run_label", "trigger: {run_label: '   '}", "'   '", "a label name of 1 to 50 characters"),
    ("trigger.review_label", f"trigger: {{review_label: {'r' * 51}}}", "'rrr", "1 to 50 characters"),
    ("trigger.review_label", "trigger: {review_label: nofx}", "same as `trigger.run_label`", "a label different"),
    ("model", "model: claude-sonnet-4-5", "'claude-sonnet-4-5'", "provider anthropic or openai"),
    ("model", "model: google:gemini", "'google:gemini'", "`provider:model`"),
    ("model", "model: 'openai:'", "'openai:'", "or null (the server's default model)"),
    ("gates.test", "gates: {test: 1}", "1", "a shell command on one line"),
    ("gates.lint", "gates: {lint: ''}", "''", "or null (no lint gate)"),
    ("gates.typecheck", 'gates: {typecheck: "mypy .\\nrm -rf /"}', "'mypy .\\nrm -rf /'", "on one line"),
    ("review.skip_paths", "review: {skip_paths: [/etc/**]}", "'/etc/**'", "repository-relative path globs"),
    ("review.skip_paths", "review: {skip_paths: [[a]]}", "a list (item 1)", "path globs"),
    ("review.skip_paths", f"review: {{skip_paths: {list(range(101))}}}", "has 101 items", "at most 100 items"),
    ("review", "review: true", "true", "a mapping with the keys auto, drafts, max_comments, fail_on"),
    ("policy", "policy: [codegen]", "a list", "a mapping with the keys tools_allowed"),
    (
        "policy.tools_allowed",
        "policy: {tools_allowed: [codegen, git_pr], require_approval_before: [git_pr]}",
        "leaves out manual:approval",
        "includes manual:approval, or []",
    ),
    ("(file)", "- git_mode: basic", "a list at the top level", "a mapping with the keys git_mode"),
    ("(file)", "just text", "'just text' at the top level", "a mapping"),
]


@pytest.mark.parametrize(("key", "text", "problem", "allowed"), ERRORS, ids=[f"{e[0]}:{e[1][:30]}" for e in ERRORS])
def test_errors_name_the_key_and_what_is_allowed(key: str, text: str, problem: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    error = caught.value
    assert error.key == key
    assert problem in error.problem
    assert allowed in error.allowed
    assert str(error) == f"`.github/nofx.yml`: `{key}` {error.problem}; allowed: {error.allowed}"


def test_message_reads_like_a_sentence() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("review:\n  fail_on: severe\n")
    assert str(caught.value) == (
        "`.github/nofx.yml`: `review.fail_on` is 'severe'; allowed: one of low, medium, high, critical, never"
    )
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("git_mode: basic\nplanner: llm\ngit_mode: hidden\n", "git_mode", (1, 3)),
        ("review:\n  auto: true\n  drafts: true\n  auto: false\n", "review.auto", (2, 4)),
        ("review: {}\nreview: {auto: false}\n", "review", (1, 2)),
        ("x:\n  - {a: 1, a: 2}\n", "x.a", (2, 2)),
    ],
)
def test_duplicate_keys_are_refused(text: str, key: str, lines: tuple[int, int]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.key == key
    assert caught.value.problem == f"appears twice (lines {lines[0]} and {lines[1]})"
    assert caught.value.line == lines[1]


@pytest.mark.parametrize(
    ("text", "line", "column", "problem"),
    [
        ("git_mode: basic\nreview: {auto: true\n", 3, 1, "expected ',' or '}'"),
        ("trigger:\n  command: /nofx\n run_label: x\n", 3, 2, "expected <block end>"),
        ("git_mode: basic: x\n", 1, 16, "mapping values are not allowed here"),
        ("a: 1\n---\nb: 2\n", 2, 1, "expected a single document"),
    ],
)
def test_invalid_yaml_names_the_position(text: str, line: int, column: int, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    error = caught.value
    assert error.key == "(file)"
    assert error.line == line
    assert f"is not valid YAML at line {line}, column {column}: " in error.problem
    assert problem in error.problem


def test_control_characters_are_invalid_yaml() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("git_mode: basic\nplanner: \x07\n")
    assert (caught.value.key, caught.value.line) == ("(file)", 2)


def test_oversized_file_is_refused_before_parsing() -> None:
    text = "# " + "x" * MAX_CONFIG_BYTES + "\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.key == "(file)"
    assert caught.value.allowed == "at most 65536 bytes (64 KB)"
    parse_config("#" * (MAX_CONFIG_BYTES - 1) + "\n")  # right at the cap is fine


def test_size_counts_bytes_not_characters() -> None:
    with pytest.raises(ConfigError, match="bytes"):
        parse_config("# " + "é" * (MAX_CONFIG_BYTES // 2) + "\n")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "x: !!python/object/apply:os.system ['touch /tmp/pwned']",
            "uses the YAML tag !!python/object/apply:os.system",
        ),
        ("x: !!python/object:builtins.dict {}", "uses the YAML tag !!python/object:builtins.dict"),
        ("planner: !custom llm", "uses the YAML tag !custom"),
        ("planner: !!str llm", "uses the YAML tag !!str"),
    ],
)
def test_yaml_tags_are_never_honoured(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.key == "(file)"
    assert caught.value.problem.startswith(problem)
    assert caught.value.line == 1


@pytest.mark.parametrize(
    "text",
    [
        "a: &x [1, 2]\nb: *x\n",
        "a: &a ['lol','lol']\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n",
        "gates: &g {test: x}\n",
    ],
)
def test_anchors_and_aliases_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="anchor or alias") as caught:
        parse_config(text)
    assert caught.value.line == 1


def test_merge_keys_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("review:\n  <<: {auto: false}\n")
    assert (caught.value.key, caught.value.line) == ("review.<<", 2)


def test_deep_nesting_is_refused_without_recursion_error() -> None:
    with pytest.raises(ConfigError, match="nests deeper than 20 levels"):
        parse_config("[" * 30_000)


@pytest.mark.parametrize("text", ["x: [" + "1," * 30_000 + "1]", "x:\n" + "- 1\n" * 15_000])
def test_huge_collections_are_refused_quickly(text: str) -> None:
    with pytest.raises(ConfigError, match="has more than 2000 values"):
        parse_config(text)


def test_unhashable_key_is_invalid_yaml() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("? [a, b]\n: 1\n")
    assert caught.value.key == "(file)"
    assert "unhashable" in caught.value.problem


def test_lists_drop_repeats_and_keep_order() -> None:
    policy = parse_config("policy: {require_approval_before: [git_pr, git_ops, git_pr]}").policy
    assert policy.require_approval_before == ("git_pr", "git_ops")


@pytest.mark.parametrize(
    ("actual", "minimum", "reaches"),
    [
        ("admin", "write", True),
        ("maintain", "write", True),
        ("write", "write", True),
        ("triage", "write", False),
        ("read", "write", False),
        ("none", "write", False),
        ("none", "read", False),
        ("read", "read", True),
        ("maintain", "admin", False),
        ("admin", "admin", True),
        ("triage", "triage", True),
        ("", "read", False),
        ("owner", "read", False),
    ],
)
def test_permission_reaches(actual: str, minimum: str, reaches: bool) -> None:
    assert permission_reaches(actual, minimum) is reaches


def test_permission_reaches_refuses_an_unknown_minimum() -> None:
    with pytest.raises(ValueError):
        permission_reaches("admin", "none")


@pytest.mark.parametrize(
    ("path", "skipped"),
    [
        ("Cargo.lock", True),
        ("web/yarn.lock", True),
        ("package-lock.json", True),
        ("apps/web/package-lock.json", True),
        ("static/js/app.min.js", True),
        ("vendor/github.com/x/y.go", True),
        ("dist/index.js", True),
        ("src/dist/index.js", False),
        ("src/app.js", False),
        ("locksmith.py", False),
        ("go.summary", False),
    ],
)
def test_default_skip_paths(path: str, skipped: bool) -> None:
    assert ReviewConfig().skips(path) is skipped


def test_skip_path_globs() -> None:
    review = ReviewConfig(skip_paths=("docs/*.md", "**/__snapshots__/**", "gen?.py"))
    assert review.skips("docs/a.md")
    assert not review.skips("docs/deep/a.md")
    assert review.skips("src/x/__snapshots__/a.snap")
    assert review.skips("__snapshots__/a.snap")
    assert review.skips("gen1.py")
    assert not review.skips("gen10.py")
    assert not ReviewConfig(skip_paths=("a+b.txt",)).skips("aab.txt")  # regex characters are literal


def test_describe_is_plain_json() -> None:
    described = describe(parse_config(DESIGN_EXAMPLE))
    assert json.loads(json.dumps(described)) == described
    assert described["policy"]["require_approval_before"] == ["git_pr"]
    assert described["gates"] == {"test": "pytest -q", "lint": "ruff check .", "typecheck": None}
    assert described["model"] == "anthropic:claude-sonnet-4-5"


@pytest.mark.parametrize(
    "section",
    [
        repo_config._SCHEMA,
        *(field for field in repo_config._SCHEMA.fields.values() if isinstance(field, config_schema.Section)),
    ],
    ids=lambda section: section.cls.__name__,
)
def test_schema_table_mirrors_the_dataclasses(section: config_schema.Section) -> None:
    """A key with no check, or a check with no field, would be a key nothing reads."""
    assert list(section.fields) == [field.name for field in dataclasses.fields(section.cls)]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("codegen: {max_turns: 0}", "codegen.max_turns"),
        ("repair: {max_attempts: 6}", "repair.max_attempts"),
    ],
)
def test_the_new_keys_are_checked(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(text)
    assert error.value.key == key


def test_setup_is_one_command_or_a_list_and_its_cache_key_a_list_of_paths() -> None:
    assert RepoConfig().setup == () and {"pyproject.toml", "package-lock.json", "go.sum"} <= set(
        RepoConfig().setup_cache_key
    )
    one = parse_config("setup: pip install -r requirements.txt\n")
    assert one.setup == ("pip install -r requirements.txt",)
    many = parse_config("setup: [npm ci, npm run build]\nsetup_cache_key: [package-lock.json, 'tools/*.txt']\n")
    assert (many.setup, many.setup_cache_key) == (("npm ci", "npm run build"), ("package-lock.json", "tools/*.txt"))
    assert from_dict(describe(many)) == many


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('setup: ["ok", "a\\nb"]', "setup"),
        ("setup: {a: 1}", "setup"),
        ("setup_cache_key: ['../etc/passwd']", "setup_cache_key"),
        ("setup_cache_key: ['/abs']", "setup_cache_key"),
    ],
)
def test_setup_keys_are_checked(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(text)
    assert error.value.key == key
