"""Organization defaults and `_extends`: merged like Probot, validated after merging, read once per commit."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from bot.config_inheritance import MAX_LEVELS, ConfigFile, resolve
from bot.queue import WorkQueue
from bot.repo_config import ConfigError, RepoConfig
from tests.conftest import Deliverer, expire_routing_caches
from tests.support.github_double import GitHubDouble
from tests.support.payloads import load_payload

OWNER, REPO = "Codertocat", "Hello-World"
COMMENTS = "/repos/{owner}/{repo}/issues/{issue_number}/comments"
CONTENTS = "/repos/{owner}/{repo}/contents/{path}"


def _resolve(files: dict[tuple[str, str, str], str], owner: str = "acme", repo: str = "app") -> RepoConfig:
    async def fetch(file: ConfigFile) -> str | None:
        return files.get((file.owner, file.repo, file.path))

    return asyncio.run(resolve(fetch, owner, repo))


def _error(files: dict[tuple[str, str, str], str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        _resolve(files)
    return caught.value


def test_a_repository_without_a_file_takes_the_organizations() -> None:
    config = _resolve({("acme", ".github", ".github/nofx.yml"): "git_mode: advanced\nreview: {fail_on: low}\n"})
    assert config.git_mode == "advanced" and config.review.fail_on == "low"


def test_no_file_anywhere_means_the_built_in_defaults() -> None:
    assert _resolve({}) == RepoConfig()


def test_the_organizations_file_is_not_merged_under_a_repository_that_has_one() -> None:
    files = {
        ("acme", ".github", ".github/nofx.yml"): "git_mode: advanced\n",
        ("acme", "app", ".github/nofx.yml"): "review: {auto: false}\n",
    }
    config = _resolve(files)
    assert config.git_mode == "basic" and config.review.auto is False


def test_extends_merges_deeply_and_replaces_lists() -> None:
    files = {
        ("acme", "app", ".github/nofx.yml"): "_extends: .github\nreview: {fail_on: low}\npolicy: {env_allowed: [B]}\n",
        ("acme", ".github", ".github/nofx.yml"): (
            "review: {auto: false, fail_on: high, skip_paths: ['x/**']}\npolicy: {env_allowed: [A, C], max_cost_usd: 5}\n"
        ),
    }
    config = _resolve(files)
    assert (config.review.auto, config.review.fail_on, config.review.skip_paths) == (False, "low", ("x/**",))
    assert (config.policy.env_allowed, config.policy.max_cost_usd) == (("B",), 5.0)


def test_extends_another_owner_and_path() -> None:
    files = {
        ("acme", "app", ".github/nofx.yml"): "_extends: shared/configs:nofx/strict.yml\n",
        ("shared", "configs", "nofx/strict.yml"): "_extends: base\nreview: {fail_on: medium}\n",
        ("shared", "base", ".github/nofx.yml"): "git_mode: hidden\nreview: {fail_on: critical}\n",
    }
    config = _resolve(files)
    assert (config.git_mode, config.review.fail_on) == ("hidden", "medium")


def test_validation_happens_after_merging() -> None:
    # Alone, the base breaks a rule that spans two keys; the repository's own file repairs it.
    files = {
        ("acme", "app", ".github/nofx.yml"): "_extends: .github\ntrigger: {review_label: 'nofx:review'}\n",
        ("acme", ".github", ".github/nofx.yml"): "trigger: {run_label: x, review_label: x}\n",
    }
    assert _resolve(files).trigger.run_label == "x"


def test_an_error_names_the_file_the_key_came_from() -> None:
    files = {
        ("acme", "app", ".github/nofx.yml"): "_extends: .github\nreview: {auto: false}\n",
        ("acme", ".github", ".github/nofx.yml"): "review: {fail_on: severe}\n",
    }
    error = _error(files)
    assert str(error).startswith("`acme/.github:.github/nofx.yml`: `review.fail_on` is 'severe'")
    files[("acme", "app", ".github/nofx.yml")] = "_extends: .github\nreview: {fail_on: sometimes}\n"
    assert str(_error(files)).startswith("`.github/nofx.yml`: `review.fail_on` is 'sometimes'")


def test_a_cycle_is_refused_naming_the_chain() -> None:
    files = {
        ("acme", "app", ".github/nofx.yml"): "_extends: one\n",
        ("acme", "one", ".github/nofx.yml"): "_extends: acme/app\n",
    }
    error = _error(files)
    assert error.key == "_extends" and error.file == "acme/one:.github/nofx.yml"
    assert "a cycle" in str(error) and ".github/nofx.yml → acme/one:.github/nofx.yml → acme/app" in str(error)


def test_more_than_three_levels_are_refused() -> None:
    names = ["app", *(f"base{n}" for n in range(1, MAX_LEVELS + 2))]
    files = {("acme", a, ".github/nofx.yml"): f"_extends: {b}\n" for a, b in itertools.pairwise(names)}
    files[("acme", names[-1], ".github/nofx.yml")] = "git_mode: hidden\n"
    error = _error(files)
    assert error.key == "_extends" and f"deeper than {MAX_LEVELS} levels" in str(error)
    del files[("acme", names[-2], ".github/nofx.yml")]  # three levels: the last base now has no _extends
    files[("acme", names[-2], ".github/nofx.yml")] = "git_mode: advanced\n"
    assert _resolve(files).git_mode == "advanced"


@pytest.mark.parametrize("value", ["../x", "a/b/c", "acme/app:/etc/passwd.yml", "acme/app:../x.yml", "[1]", "x:y.txt"])
def test_a_bad_extends_value_is_refused(value: str) -> None:
    error = _error({("acme", "app", ".github/nofx.yml"): f"_extends: {value!r}\n"})
    assert error.key == "_extends" and error.file == ".github/nofx.yml"


def test_a_missing_base_is_an_error_in_the_extending_file() -> None:
    error = _error({("acme", "app", ".github/nofx.yml"): "_extends: gone\n"})
    assert (error.key, error.file) == ("_extends", ".github/nofx.yml") and "acme/gone" in str(error)


def test_a_burst_of_comments_reads_each_config_file_once(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    installed: Callable[[dict[str, Any]], None],
    queue: WorkQueue,
) -> None:
    installed(load_payload("issue_comment.created"))
    github.branches[(OWNER, REPO, "master")] = "a" * 40  # the payload's default branch
    github.files[(OWNER, REPO, ".github/nofx.yml", None)] = "_extends: .github\ntrigger: {command: /bot}\n"
    github.files[(OWNER, ".github", ".github/nofx.yml", None)] = "_extends: defaults\n"
    github.files[(OWNER, "defaults", ".github/nofx.yml", None)] = "git_mode: advanced\n"
    for n in range(5):
        deliver("issue_comment", load_payload("issue_comment.created", comment__body="/bot help", comment__id=900 + n))
    work()

    assert len(github.calls("POST", COMMENTS)) == 5
    reads = sorted((c.path_params["repo"], c.path_params["path"]) for c in github.calls("GET", CONTENTS))
    assert reads == [
        (".github", ".github/nofx.yml"),
        ("Hello-World", ".github/nofx.yml"),
        ("defaults", ".github/nofx.yml"),
    ]
    # The default-branch head of each repository in the chain (what keys the text cache) is looked up once a minute.
    assert len(github.calls("GET", "/repos/{owner}/{repo}/branches/{branch}")) == 3
    assert len(github.calls("GET", "/repos/{owner}/{repo}")) == 2  # the default branch of each base
    # A new commit on the default branch is read afresh, once the remembered heads expire.
    github.branches[(OWNER, "defaults", "main")] = "f" * 40
    github.files[(OWNER, "defaults", ".github/nofx.yml", None)] = "git_mode: hidden\n"
    expire_routing_caches(queue)
    deliver("issue_comment", load_payload("issue_comment.created", comment__body="/bot help", comment__id=999))
    work()
    assert len(github.calls("GET", CONTENTS)) == 4
    replies = [c.json["body"] for c in github.calls("POST", COMMENTS)]
    assert all("/bot git" in reply for reply in replies[:5]) and "/bot git" not in replies[5]


def test_an_invalid_organization_default_is_answered_naming_its_file(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    installed: Callable[[dict[str, Any]], None],
) -> None:
    installed(load_payload("issue_comment.created"))
    github.files[(OWNER, ".github", ".github/nofx.yml", None)] = "review: {fail_on: severe}\n"
    deliver("issue_comment", load_payload("issue_comment.created", comment__body="/nofx add a cart"))
    work()
    [reply] = [c.json["body"] for c in github.calls("POST", COMMENTS)]
    assert reply.startswith(
        f"nofx could not use its configuration: `{OWNER}/.github:.github/nofx.yml`: `review.fail_on`"
    )
