"""GitHub's resources as the double keeps them, and the default answer of each REST operation.

Split from `github_double` so that module stays about the protocol (matching,
validation, auth, overrides) and this one about GitHub's data: what exists by
default, what clients created, and the JSON shapes GitHub answers with. Each
shape starts from the response schema's minimal instance (`OpenAPI.sample`)
with realistic values laid over it; a test checks every default answer
validates against GitHub's description.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import secrets
import string
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .openapi import OpenAPI

DOCS_URL = "https://docs.github.com/rest"
DEFAULT_INSTALLATION_PERMISSIONS = {  # what app.yml asks for
    "actions": "read",
    "checks": "write",
    "contents": "write",
    "issues": "write",
    "metadata": "read",
    "pull_requests": "write",
}
DEFAULT_EVENTS = ["check_run", "check_suite", "issue_comment", "issues", "pull_request", "pull_request_review"]
# What `permission` (the legacy field) GitHub reports for each repository role.
_LEGACY_PERMISSION = {"admin": "admin", "maintain": "write", "write": "write", "triage": "read", "read": "read"}
_REVIEW_STATES = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED", "COMMENT": "COMMENTED"}
_TOKEN_ALPHABET = string.ascii_letters + string.digits


@dataclass
class Call:
    """One request the double received, in arrival order, with what it answered."""

    method: str
    path: str
    template: str | None
    operation_id: str | None
    path_params: dict[str, Any]
    query: dict[str, Any]
    headers: dict[str, str]
    json: Any
    installation_id: int | None = None
    status: int = 0
    response: Any = None
    at: float = field(default_factory=time.monotonic)  # arrival time, to check the App's pacing


@dataclass
class Reply:
    """What the double answers; `body` (raw bytes) wins over `json`."""

    status: int
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass
class Installation:
    """An installation of the App; `repositories=None` means all repositories of the account."""

    id: int
    account: str = "octo-org"
    account_type: str = "Organization"
    repositories: list[str] | None = None
    permissions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_INSTALLATION_PERMISSIONS))
    events: list[str] = field(default_factory=lambda: list(DEFAULT_EVENTS))
    suspended: bool = False


@dataclass
class Token:
    """An installation access token the double issued."""

    token: str
    installation_id: int
    expires_at: float
    permissions: dict[str, str]
    repositories: list[str] | None
    revoked: bool = False


_ROUTES: dict[str, Callable[[GitHubResources, Call], Reply]] = {}


def _route(operation_id: str) -> Callable[[Callable[[GitHubResources, Call], Reply]], Callable[..., Reply]]:
    """Register the default behaviour of one OpenAPI operation."""

    def register(fn: Callable[[GitHubResources, Call], Reply]) -> Callable[..., Reply]:
        _ROUTES[operation_id] = fn
        return fn

    return register


def default_reply(resources: GitHubResources, call: Call) -> Reply:
    """What GitHub answers to a valid, authorized `call` given the current state."""
    assert call.operation_id is not None
    return _ROUTES[call.operation_id](resources, call)


class GitHubResources:
    """GitHub's state (public dicts that tests adjust or inspect) and one method per operation.

    The double subclasses it and provides the configuration declared below.
    """

    app_id: int
    slug: str
    name: str
    client_id: str
    html_url: str
    path_prefix: str
    token_ttl: timedelta
    clock: Callable[[], float]
    spec: OpenAPI
    _public_keys: list[str]

    @property
    def base_url(self) -> str:
        raise NotImplementedError

    def _refuse(self, call: Call, kind: str, status: int, message: str, detail: str) -> Reply:
        raise NotImplementedError

    def _init_resources(self) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(1_000_001)
        self._tokens: dict[str, Token] = {}
        self._used_manifest_codes: set[str] = set()
        self._check_run_repo: dict[int, tuple[str, str]] = {}
        # Adjustable state; keys are (owner, repo, ...) exactly as in URLs.
        self.auto_installations = True
        self.installations: dict[int, Installation] = {}
        self.default_permission = "write"
        self.permissions: dict[tuple[str, str, str], str] = {}
        self.repos: dict[tuple[str, str], dict[str, Any]] = {}
        self.issues: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.files: dict[tuple[str, str, str, str | None], bytes | str] = {}
        self.branches: dict[tuple[str, str, str], str] = {}
        self.compares: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pull_files: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        self.manifest_codes: dict[str, dict[str, Any]] = {}
        # The App's webhook delivery log, newest first as GitHub lists it (`add_hook_delivery`), and the ids of
        # the deliveries the App asked GitHub to redeliver (a test then sends them again).
        self.hook_deliveries: list[dict[str, Any]] = []
        self.redelivered: list[int] = []
        # GitHub's ids of repositories, for tokens asked for by `repository_ids` (a test seeds its payload's id).
        self.repository_ids: dict[int, str] = {}
        # What clients created, in GitHub's JSON shape, for assertions.
        self.issue_comments: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        self.reactions: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.pulls: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.reviews: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        self.review_comments: dict[tuple[str, str, int], list[dict[str, Any]]] = {}

    # ------------------------------------------------------------ seeding state

    def add_installation(self, installation_id: int, **fields: Any) -> Installation:
        """Declare an installation (account, repositories as "owner/repo", permissions, suspended)."""
        with self._lock:
            inst = self.installations[installation_id] = Installation(installation_id, **fields)
            return inst

    def add_hook_delivery(
        self, guid: str, event: str, *, action: str | None = None, installation_id: int | None = None, at: float
    ) -> dict[str, Any]:
        """Log a delivery GitHub made (or tried) to the App's webhook at time `at`, as the delivery log shows it."""
        with self._lock:
            item = {
                "id": next(self._ids),
                "guid": guid,
                "delivered_at": _iso(at),
                "redelivery": False,
                "duration": 0.05,
                "status": "OK",
                "status_code": 202,
                "event": event,
                "action": action,
                "installation_id": installation_id,
                "repository_id": None,
                "throttled_at": None,
            }
            self.hook_deliveries.insert(0, item)
            self.hook_deliveries.sort(key=lambda d: d["delivered_at"], reverse=True)
            return item

    def issue_token(self, installation_id: int, repositories: list[str] | None = None) -> str:
        """An installation token, as if the App had asked for one (for tests that skip the App's auth)."""
        with self._lock:
            inst = self._installation(installation_id)
            if inst is None:
                raise KeyError(f"no installation {installation_id}")
            return self._new_token(inst, dict(inst.permissions), repositories).token

    def expire_tokens(self) -> None:
        """Make every issued token expired, to exercise the App's refresh path."""
        with self._lock:
            for token in self._tokens.values():
                token.expires_at = self.clock() - 1

    def add_issue_comment(
        self, owner: str, repo: str, issue_number: int, body: str, *, user: str | None = None
    ) -> dict[str, Any]:
        """Seed a comment (by `user`, default the App's bot) as if it had been posted earlier."""
        with self._lock:
            return self._new_issue_comment(owner, repo, issue_number, body, self._user_or_bot(user))

    def add_pull(
        self,
        owner: str,
        repo: str,
        *,
        head: str,
        base: str = "main",
        title: str = "A pull request",
        body: str = "",
        draft: bool = False,
        user: str | None = None,
    ) -> dict[str, Any]:
        """Seed an open pull request (by `user`, default the App's bot)."""
        with self._lock:
            return self._new_pull(owner, repo, head, base, title, body, draft, self._user_or_bot(user))

    def accepts_token(self, value: str) -> bool:
        """Whether an installation token was issued here and is still valid: the git server's check."""
        with self._lock:
            token = self._tokens.get(value)
            return token is not None and not token.revoked and token.expires_at > self.clock()

    @property
    def tokens_issued(self) -> int:
        """How many installation tokens were handed out (to check the App caches them)."""
        with self._lock:
            return len(self._tokens)

    @property
    def bot_login(self) -> str:
        """The login the App's own comments and reviews carry."""
        return f"{self.slug}[bot]"

    def _installation(self, installation_id: int) -> Installation | None:
        inst = self.installations.get(installation_id)
        if inst is None and self.auto_installations:
            inst = self.installations[installation_id] = Installation(installation_id)
        return inst

    def _new_token(self, inst: Installation, permissions: dict[str, str], repositories: list[str] | None) -> Token:
        value = "ghs_" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(36))
        expires = self.clock() + self.token_ttl.total_seconds()
        token = self._tokens[value] = Token(value, inst.id, expires, permissions, repositories)
        return token

    # ------------------------------------------------------------ response building

    def _build(self, schema: str, **values: Any) -> dict[str, Any]:
        """A valid instance of a component schema with realistic values laid over the minimal one."""
        return {**self.spec.sample(self.spec.component(schema), nonnull=True), **values}

    def _now(self) -> str:
        return _iso(self.clock())

    def _api(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def user(self, login: str, *, kind: str = "User", user_id: int | None = None) -> dict[str, Any]:
        """A simple-user object for `login`, with a stable id."""
        uid = user_id if user_id is not None else _stable_id(login)
        api = self._api(f"/users/{login}")
        return self._build(
            "simple-user",
            login=login,
            id=uid,
            node_id=_node_id("U_", uid),
            avatar_url=f"https://avatars.githubusercontent.com/u/{uid}?v=4",
            gravatar_id="",
            url=api,
            html_url=f"{self.html_url}/{login.removesuffix('[bot]')}",
            followers_url=f"{api}/followers",
            following_url=f"{api}/following{{/other_user}}",
            gists_url=f"{api}/gists{{/gist_id}}",
            starred_url=f"{api}/starred{{/owner}}{{/repo}}",
            subscriptions_url=f"{api}/subscriptions",
            organizations_url=f"{api}/orgs",
            repos_url=f"{api}/repos",
            events_url=f"{api}/events{{/privacy}}",
            received_events_url=f"{api}/received_events",
            type=kind,
            site_admin=False,
        )

    @property
    def bot(self) -> dict[str, Any]:
        """The App's bot user, author of everything an installation token creates."""
        return self.user(self.bot_login, kind="Bot", user_id=90_000_000 + self.app_id)

    def _user_or_bot(self, login: str | None) -> dict[str, Any]:
        return self.bot if login is None else self.user(login)

    def _author(self, call: Call) -> dict[str, Any]:
        return self.bot if call.installation_id is not None else self.user("octocat")

    def _app(self) -> dict[str, Any]:
        owner = self.user("octo-org", kind="Organization")
        return self._build(
            "integration",
            id=self.app_id,
            slug=self.slug,
            node_id=_node_id("A_", self.app_id),
            client_id=self.client_id,
            owner=owner,
            name=self.name,
            description="nofx test App",
            external_url="https://nofx.example",
            html_url=f"{self.html_url}/apps/{self.slug}",
            created_at="2024-01-01T00:00:00Z",
            updated_at="2024-01-01T00:00:00Z",
            permissions=dict(DEFAULT_INSTALLATION_PERMISSIONS),
            events=list(DEFAULT_EVENTS),
            installations_count=len(self.installations),
        )

    def _installation_json(self, inst: Installation) -> dict[str, Any]:
        account = self.user(inst.account, kind=inst.account_type)
        # GET /app/installations describes `account` as allOf [simple-user, enterprise] (a quirk of
        # GitHub's description); these fields let one account satisfy both.
        account |= {"name": inst.account, "slug": inst.account.lower(), "created_at": None, "updated_at": None}
        return self._build(
            "installation",
            id=inst.id,
            account=account,
            repository_selection="all" if inst.repositories is None else "selected",
            access_tokens_url=self._api(f"/app/installations/{inst.id}/access_tokens"),
            repositories_url=self._api("/installation/repositories"),
            html_url=f"{self.html_url}/organizations/{inst.account}/settings/installations/{inst.id}",
            app_id=self.app_id,
            app_slug=self.slug,
            target_id=account["id"],
            target_type=inst.account_type,
            permissions=dict(inst.permissions),
            events=list(inst.events),
            created_at="2024-01-01T00:00:00Z",
            updated_at="2024-01-01T00:00:00Z",
            single_file_name=None,
            suspended_by=self.user("octocat") if inst.suspended else None,
            suspended_at="2024-06-01T00:00:00Z" if inst.suspended else None,
        )

    def repository(self, owner: str, repo: str, *, full: bool = False) -> dict[str, Any]:
        """A repository object; `self.repos[(owner, repo)]` overrides any field."""
        rid = _stable_id(f"{owner}/{repo}")
        api = self._api(f"/repos/{owner}/{repo}")
        html = f"{self.html_url}/{owner}/{repo}"
        host = urlsplit(self.html_url).netloc
        schema = "full-repository" if full else "repository"
        urls = {
            name: f"{api}/{name.removesuffix('_url').replace('_', '/')}"
            for name in self.spec.component(schema)["required"]
            if name.endswith("_url")
        }
        values = {
            **urls,
            "id": rid,
            "node_id": _node_id("R_", rid),
            "name": repo,
            "full_name": f"{owner}/{repo}",
            "owner": self.user(owner),
            "private": False,
            "visibility": "public",
            "description": None,
            "fork": False,
            "url": api,
            "html_url": html,
            "clone_url": f"{html}.git",
            "git_url": f"git://{host}/{owner}/{repo}.git",
            "ssh_url": f"git@{host}:{owner}/{repo}.git",
            "svn_url": html,
            "mirror_url": None,
            "homepage": None,
            "language": "Python",
            "default_branch": "main",
            "has_issues": True,
            "archived": False,
            "disabled": False,
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "pushed_at": "2024-01-01T00:00:00Z",
            "permissions": {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True},
            **self.repos.get((owner, repo), {}),
        }
        return self._build(schema, **values)

    def _default_branch(self, owner: str, repo: str) -> str:
        return str(self.repos.get((owner, repo), {}).get("default_branch", "main"))

    def _branch_sha(self, owner: str, repo: str, branch: str) -> str:
        return self.branches.get((owner, repo, branch)) or _fake_sha(f"{owner}/{repo}@{branch}")

    def _issue_json(self, owner: str, repo: str, number: int) -> dict[str, Any]:
        api = self._api(f"/repos/{owner}/{repo}/issues/{number}")
        values: dict[str, Any] = {
            "id": _stable_id(f"{owner}/{repo}#{number}"),
            "node_id": _node_id("I_", number),
            "url": api,
            "repository_url": self._api(f"/repos/{owner}/{repo}"),
            "labels_url": f"{api}/labels{{/name}}",
            "comments_url": f"{api}/comments",
            "events_url": f"{api}/events",
            "html_url": f"{self.html_url}/{owner}/{repo}/issues/{number}",
            "number": number,
            "state": "open",
            "title": f"Issue {number}",
            "body": "",
            "user": self.user("octocat"),
            "labels": [],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "locked": False,
            "comments": len(self.issue_comments.get((owner, repo, number), [])),
            "closed_at": None,
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "author_association": "OWNER",
        }
        pull = self.pulls.get((owner, repo, number))
        if pull is not None:
            values |= {
                "title": pull["title"],
                "body": pull["body"],
                "user": pull["user"],
                "state": pull["state"],
                "pull_request": {
                    "url": pull["url"],
                    "html_url": pull["html_url"],
                    "diff_url": pull["diff_url"],
                    "patch_url": pull["patch_url"],
                    "merged_at": None,
                },
            }
        return self._build("issue", **(values | self.issues.get((owner, repo, number), {})))

    def _next_number(self, owner: str, repo: str) -> int:
        used = [n for (o, r, n) in itertools.chain(self.issues, self.pulls) if (o, r) == (owner, repo)]
        return max(used, default=0) + 1

    def _new_issue_comment(self, owner: str, repo: str, number: int, body: str, user: dict[str, Any]) -> dict[str, Any]:
        cid = next(self._ids)
        comment = self._build(
            "issue-comment",
            id=cid,
            node_id=_node_id("IC_", cid),
            url=self._api(f"/repos/{owner}/{repo}/issues/comments/{cid}"),
            html_url=f"{self.html_url}/{owner}/{repo}/issues/{number}#issuecomment-{cid}",
            issue_url=self._api(f"/repos/{owner}/{repo}/issues/{number}"),
            body=body,
            user=user,
            created_at=self._now(),
            updated_at=self._now(),
            author_association="NONE" if user["type"] == "Bot" else "OWNER",
        )
        self.issue_comments.setdefault((owner, repo, number), []).append(comment)
        return comment

    def _find_issue_comment(self, owner: str, repo: str, comment_id: int) -> dict[str, Any] | None:
        for (o, r, _), comments in self.issue_comments.items():
            if (o, r) == (owner, repo):
                for comment in comments:
                    if comment["id"] == comment_id:
                        return comment
        return None

    def _ref(self, owner: str, repo: str, spec: str) -> dict[str, Any]:
        """The head/base object of a pull request for `branch` or `user:branch`."""
        who, _, branch = spec.rpartition(":")
        who = who or owner
        return {
            "label": f"{who}:{branch}",
            "ref": branch,
            "sha": self._branch_sha(who, repo, branch),
            "user": self.user(who),
            "repo": self.repository(who, repo),
        }

    def _new_pull(
        self, owner: str, repo: str, head: str, base: str, title: str, body: str, draft: bool, user: dict[str, Any]
    ) -> dict[str, Any]:
        number = self._next_number(owner, repo)
        api = self._api(f"/repos/{owner}/{repo}/pulls/{number}")
        issue_api = self._api(f"/repos/{owner}/{repo}/issues/{number}")
        html = f"{self.html_url}/{owner}/{repo}/pull/{number}"
        head_ref = self._ref(owner, repo, head)
        pid = next(self._ids)
        pull = self._build(
            "pull-request",
            url=api,
            id=pid,
            node_id=_node_id("PR_", pid),
            html_url=html,
            diff_url=f"{html}.diff",
            patch_url=f"{html}.patch",
            issue_url=issue_api,
            commits_url=f"{api}/commits",
            review_comments_url=f"{api}/comments",
            review_comment_url=self._api(f"/repos/{owner}/{repo}/pulls/comments{{/number}}"),
            comments_url=f"{issue_api}/comments",
            statuses_url=self._api(f"/repos/{owner}/{repo}/statuses/{head_ref['sha']}"),
            number=number,
            state="open",
            locked=False,
            title=title,
            user=user,
            body=body,
            labels=[],
            milestone=None,
            assignee=None,
            assignees=[],
            requested_reviewers=[],
            requested_teams=[],
            head=head_ref,
            base=self._ref(owner, repo, base),
            _links={
                "self": {"href": api},
                "html": {"href": html},
                "issue": {"href": issue_api},
                "comments": {"href": f"{issue_api}/comments"},
                "review_comments": {"href": f"{api}/comments"},
                "review_comment": {"href": self._api(f"/repos/{owner}/{repo}/pulls/comments{{/number}}")},
                "commits": {"href": f"{api}/commits"},
                "statuses": {"href": self._api(f"/repos/{owner}/{repo}/statuses/{head_ref['sha']}")},
            },
            author_association="NONE" if user["type"] == "Bot" else "OWNER",
            auto_merge=None,
            draft=draft,
            merged=False,
            mergeable=None,
            mergeable_state="unknown",
            merged_by=None,
            merge_commit_sha=None,
            merged_at=None,
            closed_at=None,
            created_at=self._now(),
            updated_at=self._now(),
            comments=0,
            review_comments=0,
            maintainer_can_modify=False,
            commits=1,
            additions=0,
            deletions=0,
            changed_files=0,
        )
        self.pulls[(owner, repo, number)] = pull
        return pull

    def _simple_pull(self, pull: dict[str, Any]) -> dict[str, Any]:
        """The list shape of a pull request: the full one cut to pull-request-simple's fields."""
        known = self.spec.component("pull-request-simple")["properties"]
        return self._build("pull-request-simple", **{k: v for k, v in pull.items() if k in known})

    def _pull_or_404(self, call: Call) -> dict[str, Any] | Reply:
        p = call.path_params
        pull = self.pulls.get((p["owner"], p["repo"], p["pull_number"]))
        return pull if pull is not None else Reply(404, error_body(404))

    def _review_comment(
        self, owner: str, repo: str, number: int, review_id: int, fields: dict[str, Any], user: dict[str, Any]
    ) -> dict[str, Any]:
        cid = next(self._ids)
        pull = self.pulls[(owner, repo, number)]
        api = self._api(f"/repos/{owner}/{repo}/pulls/comments/{cid}")
        html = f"{pull['html_url']}#discussion_r{cid}"
        # GitHub leaves out the position fields a comment does not have (they are not nullable).
        optional = {
            "line": fields.get("line"),
            "original_line": fields.get("line"),
            "side": fields.get("side", "RIGHT") if "line" in fields else None,
            "position": fields.get("position"),
            "original_position": fields.get("position"),
            "in_reply_to_id": fields.get("in_reply_to_id"),
        }
        comment = self._build(
            "pull-request-review-comment",
            url=api,
            id=cid,
            node_id=_node_id("PRRC_", cid),
            pull_request_review_id=review_id,
            diff_hunk=fields.get("diff_hunk", "@@ -1 +1 @@"),
            path=fields.get("path", ""),
            commit_id=pull["head"]["sha"],
            original_commit_id=pull["head"]["sha"],
            user=user,
            body=fields.get("body", ""),
            created_at=self._now(),
            updated_at=self._now(),
            html_url=html,
            pull_request_url=pull["url"],
            author_association="NONE" if user["type"] == "Bot" else "OWNER",
            _links={"self": {"href": api}, "html": {"href": html}, "pull_request": {"href": pull["url"]}},
            start_line=fields.get("start_line"),
            original_start_line=fields.get("start_line"),
            start_side=fields.get("start_side"),
            subject_type="line",
            **{name: value for name, value in optional.items() if value is not None},
        )
        self.review_comments.setdefault((owner, repo, number), []).append(comment)
        pull["review_comments"] += 1
        return comment

    def _diff_problem(self, owner: str, repo: str, number: int, comment: dict[str, Any]) -> str | None:
        """Why GitHub would refuse a review comment's position, when the PR's files are known."""
        files = self.pull_files.get((owner, repo, number))
        if files is None:
            return None
        entry = next((f for f in files if f["filename"] == comment["path"]), None)
        if entry is None:
            return "Path could not be resolved"
        patch = entry.get("patch", "")
        if "position" in comment:
            return None if 1 <= comment["position"] < len(patch.splitlines()) else "Position could not be resolved"
        if "line" not in comment:
            return "line or position is required"
        left, right = _diff_lines(patch)
        side = comment.get("side", "RIGHT")
        if comment["line"] not in (right if side == "RIGHT" else left):
            return "Line could not be resolved"
        if "start_line" in comment:
            start_side = comment.get("start_side", side)
            if comment["start_line"] not in (right if start_side == "RIGHT" else left):
                return "Start line could not be resolved"
        return None

    def _page(self, call: Call, items: list[Any]) -> Reply:
        """One page of a list with GitHub's `Link` header, so pagination code is exercised."""
        per_page = min(int(call.query.get("per_page", 30)), 100)
        page = max(int(call.query.get("page", 1)), 1)
        last = max((len(items) + per_page - 1) // per_page, 1)
        links = []
        for rel, number in (("prev", page - 1), ("next", page + 1), ("last", last), ("first", 1)):
            if 1 <= number <= last and number != page:
                query = urlencode({**{k: v for k, v in _raw_query(call).items()}, "page": number})
                links.append(f'<{self.base_url}{call.path.removeprefix(self.path_prefix)}?{query}>; rel="{rel}"')
        headers = {"link": ", ".join(links)} if links else {}
        return Reply(200, items[(page - 1) * per_page : page * per_page], headers)

    # ------------------------------------------------------------ default behaviour, one per operation

    @_route("apps/get-authenticated")
    def _get_app(self, call: Call) -> Reply:
        return Reply(200, self._app())

    @_route("apps/list-installations")
    def _list_installations(self, call: Call) -> Reply:
        return self._page(call, [self._installation_json(inst) for inst in self.installations.values()])

    @_route("apps/get-installation")
    def _get_installation(self, call: Call) -> Reply:
        inst = self._installation(call.path_params["installation_id"])
        return Reply(404, error_body(404)) if inst is None else Reply(200, self._installation_json(inst))

    @_route("apps/list-webhook-deliveries")
    def _list_hook_deliveries(self, call: Call) -> Reply:
        """Newest first, paged by an opaque cursor in the `Link` header, as GitHub does."""
        per_page = min(int(call.query.get("per_page", 30)), 100)
        start = int(call.query.get("cursor") or 0)
        items = self.hook_deliveries[start : start + per_page]
        headers = {}
        if start + per_page < len(self.hook_deliveries):
            query = urlencode({"per_page": per_page, "cursor": str(start + per_page)})
            headers["link"] = f'<{self.base_url}{call.path.removeprefix(self.path_prefix)}?{query}>; rel="next"'
        return Reply(200, items, headers)

    @_route("apps/redeliver-webhook-delivery")
    def _redeliver(self, call: Call) -> Reply:
        item = next((d for d in self.hook_deliveries if d["id"] == call.path_params["delivery_id"]), None)
        if item is None:
            return Reply(404, error_body(404))
        self.redelivered.append(item["id"])
        return Reply(202, {})

    @_route("apps/create-installation-access-token")
    def _create_token(self, call: Call) -> Reply:
        inst = self._installation(call.path_params["installation_id"])
        if inst is None:
            return Reply(404, error_body(404))
        if inst.suspended:
            return Reply(403, error_body(403, "This installation has been suspended"))
        wanted = call.json or {}
        permissions = wanted.get("permissions") or dict(inst.permissions)
        for scope, level in permissions.items():
            granted = inst.permissions.get(scope)
            if granted is None or (level == "write" and granted == "read"):
                return Reply(422, error_body(422, "The permissions requested are not granted to this installation."))
        repositories = wanted.get("repositories")
        if wanted.get("repository_ids") is not None:
            unknown = [i for i in wanted["repository_ids"] if i not in self.repository_ids]
            if unknown:
                return Reply(422, error_body(422, f"There is at least one repository that does not exist: {unknown}"))
            repositories = [*(repositories or []), *(self.repository_ids[i] for i in wanted["repository_ids"])]
        if repositories is not None:
            repositories = [name if "/" in name else f"{inst.account}/{name}" for name in repositories]
            if inst.repositories is not None and not set(repositories) <= set(inst.repositories):
                message = (
                    "There is at least one repository that does not exist or is not accessible"
                    " to the parent installation."
                )
                return Reply(422, error_body(422, message))
        token = self._new_token(inst, permissions, repositories)
        selected = repositories is not None or inst.repositories is not None
        body: dict[str, Any] = {
            "token": token.token,
            "expires_at": _iso(token.expires_at),
            "permissions": permissions,
            "repository_selection": "selected" if selected else "all",
        }
        if repositories is not None:
            body["repositories"] = [self.repository(*name.split("/", 1)) for name in repositories]
        return Reply(201, body)

    @_route("apps/revoke-installation-access-token")
    def _revoke_token(self, call: Call) -> Reply:
        _scheme, _, credential = call.headers.get("authorization", "").partition(" ")
        self._tokens[credential.strip()].revoked = True  # authenticated above: the token exists
        return Reply(204, None)

    @_route("apps/create-from-manifest")
    def _convert_manifest(self, call: Call) -> Reply:
        code = call.path_params["code"]
        if code in self._used_manifest_codes:
            return Reply(404, error_body(404))
        self._used_manifest_codes.add(code)
        given = self.manifest_codes.pop(code, {})
        pem = given.get("pem")
        if pem is None:
            # Like GitHub, the conversion creates the App's key; the double then accepts JWTs signed with it.
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
        public = serialization.load_pem_private_key(pem.encode(), password=None).public_key()
        self._public_keys.append(
            public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        )
        body = {
            **self._app(),
            "client_id": self.client_id,
            "client_secret": secrets.token_hex(20),
            "webhook_secret": secrets.token_hex(20),
            "pem": pem,
            **{k: v for k, v in given.items() if k != "pem"},
        }
        return Reply(201, body)

    @_route("apps/list-repos-accessible-to-installation")
    def _list_installation_repos(self, call: Call) -> Reply:
        inst = self._installation(call.installation_id or 0)
        names = (
            inst.repositories
            if inst and inst.repositories is not None
            else [f"{o}/{r}" for (o, r) in self.repos if inst and o == inst.account]
        )
        repos = [self.repository(*name.split("/", 1)) for name in names]
        page = self._page(call, repos)
        selection = "all" if inst is None or inst.repositories is None else "selected"
        page.json = {"total_count": len(repos), "repositories": page.json, "repository_selection": selection}
        return page

    @_route("repos/get")
    def _get_repo(self, call: Call) -> Reply:
        return Reply(200, self.repository(call.path_params["owner"], call.path_params["repo"], full=True))

    @_route("repos/get-collaborator-permission-level")
    def _get_permission(self, call: Call) -> Reply:
        p = call.path_params
        role = self.permissions.get((p["owner"], p["repo"], p["username"]), self.default_permission)
        legacy = _LEGACY_PERMISSION.get(role, "none")
        flags = {
            "pull": legacy != "none",
            "triage": role in ("triage", "write", "maintain", "admin"),
            "push": legacy in ("write", "admin"),
            "maintain": role in ("maintain", "admin"),
            "admin": role == "admin",
        }
        user = {**self.user(p["username"]), "permissions": flags, "role_name": role}
        return Reply(
            200, {"permission": legacy, "role_name": role, "user": self._build("nullable-collaborator", **user)}
        )

    def _react(self, call: Call, subject: str, subject_id: int) -> Reply:
        p = call.path_params
        existing = self.reactions.setdefault((p["owner"], p["repo"], subject, subject_id), [])
        user = self._author(call)
        for reaction in existing:
            if reaction["content"] == call.json["content"] and reaction["user"]["id"] == user["id"]:
                return Reply(200, reaction)  # GitHub answers 200 for a reaction that already exists
        rid = next(self._ids)
        reaction = self._build(
            "reaction",
            id=rid,
            node_id=_node_id("REA_", rid),
            user=user,
            content=call.json["content"],
            created_at=self._now(),
        )
        existing.append(reaction)
        return Reply(201, reaction)

    @_route("reactions/create-for-issue")
    def _react_issue(self, call: Call) -> Reply:
        return self._react(call, "issue", call.path_params["issue_number"])

    @_route("reactions/create-for-issue-comment")
    def _react_issue_comment(self, call: Call) -> Reply:
        return self._react(call, "issue_comment", call.path_params["comment_id"])

    @_route("reactions/create-for-pull-request-review-comment")
    def _react_review_comment(self, call: Call) -> Reply:
        return self._react(call, "pull_request_review_comment", call.path_params["comment_id"])

    @_route("issues/get")
    def _get_issue(self, call: Call) -> Reply:
        p = call.path_params
        return Reply(200, self._issue_json(p["owner"], p["repo"], p["issue_number"]))

    @_route("issues/list-comments")
    def _list_issue_comments(self, call: Call) -> Reply:
        p = call.path_params
        return self._page(call, self.issue_comments.get((p["owner"], p["repo"], p["issue_number"]), []))

    @_route("issues/create-comment")
    def _create_issue_comment(self, call: Call) -> Reply:
        p = call.path_params
        comment = self._new_issue_comment(
            p["owner"], p["repo"], p["issue_number"], call.json["body"], self._author(call)
        )
        return Reply(201, comment, {"location": comment["url"]})

    @_route("issues/update-comment")
    def _update_issue_comment(self, call: Call) -> Reply:
        p = call.path_params
        comment = self._find_issue_comment(p["owner"], p["repo"], p["comment_id"])
        if comment is None:
            return Reply(404, error_body(404))
        comment.update(body=call.json["body"], updated_at=self._now())
        return Reply(200, comment)

    @_route("repos/get-content")
    def _get_content(self, call: Call) -> Reply:
        p = call.path_params
        owner, repo, path = p["owner"], p["repo"], p["path"].strip("/")
        ref = call.query.get("ref")
        files = {k[2]: v for k, v in self.files.items() if k[:2] == (owner, repo) and k[3] is None}
        files |= {k[2]: v for k, v in self.files.items() if k[:2] == (owner, repo) and ref is not None and k[3] == ref}
        if path in files:
            data = _as_bytes(files[path])
            if "raw" in call.headers.get("accept", ""):
                return Reply(200, None, {"content-type": "application/vnd.github.raw; charset=utf-8"}, body=data)
            return Reply(200, self._content_entry(owner, repo, path, data, ref, with_content=True))
        children = sorted({name[len(path) + 1 :].split("/")[0] for name in files if name.startswith(path + "/")})
        if not children:
            return Reply(404, error_body(404))
        listing = []
        for child in children:
            child_path = f"{path}/{child}"
            if child_path in files:
                listing.append(self._content_entry(owner, repo, child_path, _as_bytes(files[child_path]), ref))
            else:
                listing.append(self._content_entry(owner, repo, child_path, None, ref))
        return Reply(200, listing)

    def _content_entry(
        self, owner: str, repo: str, path: str, data: bytes | None, ref: str | None, *, with_content: bool = False
    ) -> dict[str, Any]:
        """A contents API entry; `data=None` is a directory."""
        ref = ref or self._default_branch(owner, repo)
        sha = (
            hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
            if data is not None
            else _fake_sha(path)
        )
        api = self._api(f"/repos/{owner}/{repo}/contents/{path}?ref={ref}")
        kind = "file" if data is not None else "dir"
        html = f"{self.html_url}/{owner}/{repo}/{'blob' if data is not None else 'tree'}/{ref}/{path}"
        git = self._api(f"/repos/{owner}/{repo}/git/{'blobs' if data is not None else 'trees'}/{sha}")
        entry: dict[str, Any] = {
            "type": kind,
            "size": len(data) if data is not None else 0,
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "sha": sha,
            "url": api,
            "git_url": git,
            "html_url": html,
            "download_url": f"https://raw.githubusercontent.com/{owner}/{repo}/{ref}/{path}"
            if data is not None
            else None,
            "_links": {"self": api, "git": git, "html": html},
        }
        if with_content and data is not None:
            encoded = base64.b64encode(data).decode()
            # GitHub wraps base64 content at 60 characters per line.
            entry |= {
                "content": "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)) + "\n",
                "encoding": "base64",
            }
        return entry

    @_route("checks/create")
    def _create_check_run(self, call: Call) -> Reply:
        p, body = call.path_params, call.json
        if body.get("status") == "completed" and "conclusion" not in body:
            return Reply(422, error_body(422, "Invalid request.\n\nNo conclusion given for a completed check run."))
        rid = next(self._ids)
        api = self._api(f"/repos/{p['owner']}/{p['repo']}/check-runs/{rid}")
        run = self._build(
            "check-run",
            id=rid,
            node_id=_node_id("CR_", rid),
            head_sha=body["head_sha"],
            name=body["name"],
            external_id=body.get("external_id", ""),
            url=api,
            html_url=f"{self.html_url}/{p['owner']}/{p['repo']}/runs/{rid}",
            details_url=body.get("details_url", f"{self.html_url}/{p['owner']}/{p['repo']}/runs/{rid}"),
            status="queued",
            conclusion=None,
            started_at=self._now(),
            completed_at=None,
            output={
                "title": None,
                "summary": None,
                "text": None,
                "annotations_count": 0,
                "annotations_url": f"{api}/annotations",
            },
            check_suite={"id": _stable_id(body["head_sha"])},
            app=self._app(),
            pull_requests=[],
        )
        self.check_runs[rid] = run
        self._check_run_repo[rid] = (p["owner"], p["repo"])
        self._apply_check_run_fields(run, body)
        return Reply(201, run)

    def _apply_check_run_fields(self, run: dict[str, Any], body: dict[str, Any]) -> None:
        for name in ("name", "details_url", "external_id", "status", "started_at", "completed_at", "conclusion"):
            if name in body:
                run[name] = body[name]
        if body.get("conclusion") is not None:
            # GitHub: providing a conclusion sets the status to completed.
            run["status"] = "completed"
            run["completed_at"] = body.get("completed_at", self._now())
        if "output" in body:
            output = body["output"]
            run["output"].update({k: output[k] for k in ("title", "summary", "text") if k in output})
            run["output"]["annotations_count"] += len(output.get("annotations", []))

    def _check_run_or_404(self, call: Call) -> dict[str, Any] | Reply:
        p = call.path_params
        rid = p["check_run_id"]
        if self._check_run_repo.get(rid) != (p["owner"], p["repo"]):
            return Reply(404, error_body(404))
        return self.check_runs[rid]

    @_route("checks/update")
    def _update_check_run(self, call: Call) -> Reply:
        run = self._check_run_or_404(call)
        if isinstance(run, Reply):
            return run
        self._apply_check_run_fields(run, call.json)
        return Reply(200, run)

    @_route("checks/get")
    def _get_check_run(self, call: Call) -> Reply:
        run = self._check_run_or_404(call)
        return run if isinstance(run, Reply) else Reply(200, run)

    @_route("checks/list-for-ref")
    def _list_check_runs(self, call: Call) -> Reply:
        p, q = call.path_params, call.query
        ref = p["ref"]
        sha = (
            ref
            if re.fullmatch(r"[0-9a-f]{40}", ref)
            else self._branch_sha(p["owner"], p["repo"], ref.removeprefix("heads/"))
        )
        runs = [
            run
            for rid, run in self.check_runs.items()
            if self._check_run_repo.get(rid) == (p["owner"], p["repo"])
            and run["head_sha"] == sha
            and q.get("check_name", run["name"]) == run["name"]
            and q.get("status", run["status"]) == run["status"]
        ]
        if q.get("filter", "latest") == "latest":
            latest = {run["name"]: run for run in runs}  # later runs replace earlier ones of the same name
            runs = list(latest.values())
        page = self._page(call, runs)
        page.json = {"total_count": len(runs), "check_runs": page.json}
        return page

    @_route("pulls/list")
    def _list_pulls(self, call: Call) -> Reply:
        p, q = call.path_params, call.query
        head = q.get("head")
        if head is not None and ":" not in head:
            detail = f"head filter {head!r} must be 'user:ref-name' (GitHub ignores a bare branch name)"
            return self._refuse(call, "invalid_request", 422, f"Invalid request.\n\n{detail}", detail)
        state = q.get("state", "open")
        pulls = [
            self._simple_pull(pull)
            for (o, r, _), pull in sorted(self.pulls.items(), key=lambda item: -item[0][2])
            if (o, r) == (p["owner"], p["repo"])
            and (state == "all" or pull["state"] == state)
            and (head is None or pull["head"]["label"] == head)
            and q.get("base", pull["base"]["ref"]) == pull["base"]["ref"]
        ]
        return self._page(call, pulls)

    @_route("pulls/create")
    def _create_pull(self, call: Call) -> Reply:
        p, body = call.path_params, call.json
        owner, repo = p["owner"], p["repo"]
        head = body["head"] if ":" in body["head"] else f"{owner}:{body['head']}"
        for (o, r, _), pull in self.pulls.items():
            if (
                (o, r) == (owner, repo)
                and pull["state"] == "open"
                and pull["head"]["label"] == head
                and pull["base"]["ref"] == body["base"]
            ):
                return Reply(422, _validation_error("PullRequest", f"A pull request already exists for {head}."))
        if "title" not in body and "issue" not in body:
            return Reply(422, _validation_error("PullRequest", "title is missing", code="missing_field"))
        title = body.get("title") or f"Issue {body.get('issue')}"
        pull = self._new_pull(
            owner, repo, head, body["base"], title, body.get("body") or "", bool(body.get("draft")), self._author(call)
        )
        pull["maintainer_can_modify"] = bool(body.get("maintainer_can_modify", False))
        return Reply(201, pull, {"location": pull["url"]})

    @_route("pulls/get")
    def _get_pull(self, call: Call) -> Reply:
        pull = self._pull_or_404(call)
        return pull if isinstance(pull, Reply) else Reply(200, pull)

    @_route("pulls/update")
    def _update_pull(self, call: Call) -> Reply:
        pull = self._pull_or_404(call)
        if isinstance(pull, Reply):
            return pull
        body = call.json or {}
        for name in ("title", "body", "maintainer_can_modify"):
            if name in body:
                pull[name] = body[name]
        if "base" in body:
            pull["base"] = self._ref(call.path_params["owner"], call.path_params["repo"], body["base"])
        if "state" in body:
            pull["state"] = body["state"]
            pull["closed_at"] = self._now() if body["state"] == "closed" else None
        pull["updated_at"] = self._now()
        return Reply(200, pull)

    @_route("pulls/list-files")
    def _list_pull_files(self, call: Call) -> Reply:
        p = call.path_params
        owner, repo = p["owner"], p["repo"]
        entries = []
        for given in self.pull_files.get((owner, repo, p["pull_number"]), []):
            name = given["filename"]
            patch = given.get("patch", "")
            additions = sum(1 for ln in patch.splitlines() if ln.startswith("+"))
            deletions = sum(1 for ln in patch.splitlines() if ln.startswith("-"))
            sha = _fake_sha(name + patch)
            entry = self._build(
                "diff-entry",
                sha=sha,
                filename=name,
                status="modified",
                additions=additions,
                deletions=deletions,
                changes=additions + deletions,
                blob_url=f"{self.html_url}/{owner}/{repo}/blob/{sha}/{name}",
                raw_url=f"{self.html_url}/{owner}/{repo}/raw/{sha}/{name}",
                contents_url=self._api(f"/repos/{owner}/{repo}/contents/{name}?ref={sha}"),
                patch=patch,
            )
            entries.append(entry | given)
        return self._page(call, entries)

    @_route("pulls/request-reviewers")
    def _request_reviewers(self, call: Call) -> Reply:
        pull = self._pull_or_404(call)
        if isinstance(pull, Reply):
            return pull
        logins = (call.json or {}).get("reviewers", [])
        if pull["user"]["login"] in logins:
            return Reply(422, error_body(422, "Review cannot be requested from pull request author."))
        known = {u["login"] for u in pull["requested_reviewers"]}
        pull["requested_reviewers"] += [self.user(login) for login in logins if login not in known]
        return Reply(201, self._simple_pull(pull))

    @_route("pulls/list-reviews")
    def _list_reviews(self, call: Call) -> Reply:
        p = call.path_params
        return self._page(call, self.reviews.get((p["owner"], p["repo"], p["pull_number"]), []))

    @_route("pulls/create-review")
    def _create_review(self, call: Call) -> Reply:
        pull = self._pull_or_404(call)
        if isinstance(pull, Reply):
            return pull
        p, body = call.path_params, call.json or {}
        owner, repo, number = p["owner"], p["repo"], p["pull_number"]
        user = self._author(call)
        event = body.get("event")
        if (
            event in ("REQUEST_CHANGES", "COMMENT")
            and not body.get("body")
            and not (event == "COMMENT" and body.get("comments"))
        ):
            return Reply(422, error_body(422, f"Unprocessable Entity: body is required for {event}"))
        if event in ("APPROVE", "REQUEST_CHANGES") and pull["user"]["id"] == user["id"]:
            verb = "approve" if event == "APPROVE" else "request changes on"
            return Reply(422, error_body(422, f"Unprocessable Entity: Can not {verb} your own pull request"))
        problems = [self._diff_problem(owner, repo, number, c) for c in body.get("comments", [])]
        if any(problems):
            return Reply(
                422,
                {
                    "message": "Unprocessable Entity",
                    "errors": [x for x in problems if x],
                    "documentation_url": DOCS_URL,
                    "status": "422",
                },
            )
        rid = next(self._ids)
        html = f"{pull['html_url']}#pullrequestreview-{rid}"
        state = _REVIEW_STATES.get(event or "", "PENDING")
        review = self._build(
            "pull-request-review",
            id=rid,
            node_id=_node_id("PRR_", rid),
            user=user,
            body=body.get("body", ""),
            state=state,
            html_url=html,
            pull_request_url=pull["url"],
            _links={"html": {"href": html}, "pull_request": {"href": pull["url"]}},
            commit_id=body.get("commit_id", pull["head"]["sha"]),
            author_association="NONE" if user["type"] == "Bot" else "OWNER",
            **({"submitted_at": self._now()} if state != "PENDING" else {}),
        )
        self.reviews.setdefault((owner, repo, number), []).append(review)
        for comment in body.get("comments", []):
            self._review_comment(owner, repo, number, rid, comment, user)
        return Reply(200, review)

    @_route("pulls/list-review-comments")
    def _list_review_comments(self, call: Call) -> Reply:
        p = call.path_params
        return self._page(call, self.review_comments.get((p["owner"], p["repo"], p["pull_number"]), []))

    @_route("pulls/create-reply-for-review-comment")
    def _reply_to_review_comment(self, call: Call) -> Reply:
        pull = self._pull_or_404(call)
        if isinstance(pull, Reply):
            return pull
        p = call.path_params
        owner, repo, number = p["owner"], p["repo"], p["pull_number"]
        parent = next(
            (c for c in self.review_comments.get((owner, repo, number), []) if c["id"] == p["comment_id"]), None
        )
        if parent is None:
            return Reply(404, error_body(404))
        fields = {k: parent[k] for k in ("path", "line", "side", "diff_hunk") if parent.get(k) is not None}
        fields |= {"body": call.json["body"], "in_reply_to_id": parent.get("in_reply_to_id") or parent["id"]}
        comment = self._review_comment(
            owner, repo, number, parent["pull_request_review_id"], fields, self._author(call)
        )
        return Reply(201, comment)

    @_route("repos/compare-commits-with-basehead")
    def _compare(self, call: Call) -> Reply:
        p = call.path_params
        owner, repo, basehead = p["owner"], p["repo"], p["basehead"]
        base, _, head = basehead.partition("...")
        api = self._api(f"/repos/{owner}/{repo}/compare/{basehead}")
        html = f"{self.html_url}/{owner}/{repo}/compare/{basehead}"
        base_commit = self._commit(owner, repo, self._branch_sha(owner, repo, base))
        comparison = self._build(
            "commit-comparison",
            url=api,
            html_url=html,
            permalink_url=html,
            diff_url=f"{html}.diff",
            patch_url=f"{html}.patch",
            base_commit=base_commit,
            merge_base_commit=base_commit,
            status="identical" if self._branch_sha(owner, repo, head) == base_commit["sha"] else "ahead",
            ahead_by=0,
            behind_by=0,
            total_commits=0,
            commits=[],
            files=[],
        )
        return Reply(200, comparison | self.compares.get((owner, repo, basehead), {}))

    def _commit(self, owner: str, repo: str, sha: str) -> dict[str, Any]:
        api = self._api(f"/repos/{owner}/{repo}/commits/{sha}")
        commit = self.spec.sample(self.spec.component("commit"), nonnull=True)
        commit["commit"] |= {"message": "Initial commit", "url": self._api(f"/repos/{owner}/{repo}/git/commits/{sha}")}
        return commit | {
            "url": api,
            "sha": sha,
            "node_id": _node_id("C_", _stable_id(sha)),
            "html_url": f"{self.html_url}/{owner}/{repo}/commit/{sha}",
            "comments_url": f"{api}/comments",
        }

    @_route("users/get-by-username")
    def _get_user(self, call: Call) -> Reply:
        login = call.path_params["username"]
        found = self.bot if login == self.bot_login else self.user(login)
        return Reply(200, self._build("public-user", **found, created_at=self._now(), updated_at=self._now()))

    @_route("repos/get-branch")
    def _get_branch(self, call: Call) -> Reply:
        p = call.path_params
        owner, repo, branch = p["owner"], p["repo"], p["branch"]
        if (owner, repo, branch) not in self.branches and branch != self._default_branch(owner, repo):
            return Reply(404, error_body(404, "Branch not found"))
        api = self._api(f"/repos/{owner}/{repo}/branches/{branch}")
        return Reply(
            200,
            self._build(
                "branch-with-protection",
                name=branch,
                commit=self._commit(owner, repo, self._branch_sha(owner, repo, branch)),
                _links={"html": f"{self.html_url}/{owner}/{repo}/tree/{branch}", "self": api},
                protected=False,
                protection={
                    "enabled": False,
                    "required_status_checks": {"enforcement_level": "off", "contexts": [], "checks": []},
                },
                protection_url=f"{api}/protection",
            ),
        )


# ---------------------------------------------------------------- small pure helpers


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    default = {401: "Bad credentials", 403: "Forbidden", 404: "Not Found", 422: "Validation Failed"}
    return {
        "message": message or default.get(status, "Server Error"),
        "documentation_url": DOCS_URL,
        "status": str(status),
    }


def _validation_error(resource: str, message: str, code: str = "custom") -> dict[str, Any]:
    return {
        "message": "Validation Failed",
        "errors": [{"resource": resource, "code": code, "message": message}],
        "documentation_url": DOCS_URL,
        "status": "422",
    }


def _diff_lines(patch: str) -> tuple[set[int], set[int]]:
    """Line numbers a review comment may target on the LEFT (old) and RIGHT (new) side of a patch."""
    left: set[int] = set()
    right: set[int] = set()
    old = new = 0
    for line in patch.splitlines():
        hunk = re.match(r"@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@", line)
        if hunk:
            old, new = int(hunk.group(1)), int(hunk.group(2))
        elif line.startswith("-"):
            left.add(old)
            old += 1
        elif line.startswith("+"):
            right.add(new)
            new += 1
        elif not line.startswith("\\"):
            left.add(old)
            right.add(new)
            old, new = old + 1, new + 1
    return left, right


def _raw_query(call: Call) -> dict[str, Any]:
    return {k: ("true" if v is True else "false" if v is False else v) for k, v in call.query.items()}


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stable_id(text: str) -> int:
    return zlib.crc32(text.encode()) % 90_000_000 + 1_000


def _node_id(prefix: str, number: int) -> str:
    return prefix + base64.b64encode(f"{number}".encode()).decode().rstrip("=")


def _fake_sha(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def _as_text(pem: str | bytes) -> str:
    return pem.decode() if isinstance(pem, bytes) else pem


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data
