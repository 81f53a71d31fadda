"""The GitHub double itself: strict like GitHub about requests, and its own answers fit GitHub's description."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support import openapi
from tests.support.github_double import (
    APP_ID,
    SECONDARY_RATE_LIMIT,
    GitHubDouble,
    Reply,
    app_key,
    make_app_jwt,
)
from tests.support.payloads import load_payload, sign, webhook_headers

COMMENTS = "/repos/{owner}/{repo}/issues/{issue_number}/comments"


@pytest.fixture
def gh() -> Iterator[GitHubDouble]:
    with GitHubDouble(app_id=APP_ID, public_key_pem=app_key().public_pem) as double:
        yield double


@pytest.fixture
def http(gh: GitHubDouble) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gh.base_url, timeout=5) as client:
        yield client


def app_auth() -> dict[str, str]:
    return {"authorization": f"Bearer {make_app_jwt(APP_ID, app_key().private_pem)}"}


def installation_auth(http: httpx.Client, installation_id: int = 7) -> dict[str, str]:
    response = http.post(f"/app/installations/{installation_id}/access_tokens", headers=app_auth())
    assert response.status_code == 201
    return {"authorization": f"token {response.json()['token']}"}


def take_violations(gh: GitHubDouble) -> list[str]:
    """The violations so far, cleared, for tests that provoke them on purpose."""
    found = [str(v) for v in gh.violations]
    gh.violations.clear()
    return found


def test_a_valid_request_passes_and_is_recorded(gh: GitHubDouble, http: httpx.Client) -> None:
    auth = installation_auth(http, installation_id=7)

    response = http.post("/repos/octo/app/issues/3/comments", json={"body": "Working on it"}, headers=auth)

    assert response.status_code == 201
    comment = response.json()
    assert comment["body"] == "Working on it"
    assert comment["user"]["login"] == gh.bot_login == "nofx-test[bot]"
    assert comment["html_url"].endswith(f"/octo/app/issues/3#issuecomment-{comment['id']}")
    [call] = gh.calls("POST", "/repos/{o}/{r}/issues/{n}/comments")
    assert (call.path_params, call.json, call.installation_id) == (
        {"owner": "octo", "repo": "app", "issue_number": 3},
        {"body": "Working on it"},
        7,
    )
    assert gh.calls("POST", "/repos/octo/app/issues/3/comments") == [call]
    listed = http.get("/repos/octo/app/issues/3/comments", headers=auth).json()
    assert [c["id"] for c in listed] == [comment["id"]]
    gh.assert_clean()


def test_an_unknown_operation_is_a_violation_answered_404(gh: GitHubDouble, http: httpx.Client) -> None:
    auth = installation_auth(http)

    assert http.get("/repos/octo/app/issues/comments", headers=auth).status_code == 404
    assert http.delete("/repos/octo/app/issues/comments/1", headers=auth).status_code == 404

    found = take_violations(gh)
    assert len(found) == 2 and all("[unknown_operation]" in v for v in found)
    assert "PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}" in found[1]


def test_an_invalid_body_or_query_is_a_violation_answered_422(gh: GitHubDouble, http: httpx.Client) -> None:
    auth = installation_auth(http)

    typo = http.post("/repos/octo/app/issues/3/comments", json={"bdy": "hi"}, headers=auth)
    wrong_enum = http.post("/repos/octo/app/issues/3/reactions", json={"content": "thumbsup"}, headers=auth)
    bad_query = http.get("/repos/octo/app/pulls", params={"per_page": "many", "stat": "open"}, headers=auth)

    assert [typo.status_code, wrong_enum.status_code, bad_query.status_code] == [422, 422, 422]
    found = take_violations(gh)
    assert "'body' is a required property" in found[0] and "'bdy' was unexpected" in found[0]
    assert "'thumbsup' is not one of" in found[1]
    assert "'many' is not of type 'integer'" in found[2] and "unknown query parameter 'stat'" in found[2]
    assert not gh.calls("POST", COMMENTS)[0].response.get("id")


def _jwt_with(**claims: object) -> str:
    now = int(time.time())
    return jwt.encode({"iat": now - 60, "exp": now + 540, "iss": str(APP_ID)} | claims, app_key().private_pem, "RS256")


def _foreign_jwt() -> str:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return make_app_jwt(APP_ID, pem.decode())


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "App JWT"),
        ("token ghs_notajwt", "App JWT"),
        ("Bearer not.a.jwt", "JWT rejected"),
        ("Bearer " + "{foreign}", "Signature verification failed"),
        ("Bearer " + "{expired}", "has expired"),
        ("Bearer " + "{too_long}", "too far in the future"),
        ("Bearer " + "{other_app}", "not the App id"),
        ("Bearer " + "{from_the_future}", "'iat' is in the future"),
    ],
)
def test_app_endpoints_require_a_valid_app_jwt(
    gh: GitHubDouble, http: httpx.Client, authorization: str | None, reason: str
) -> None:
    now = int(time.time())
    tokens = {
        "{foreign}": _foreign_jwt,
        "{expired}": lambda: _jwt_with(iat=now - 700, exp=now - 100),
        "{too_long}": lambda: _jwt_with(exp=now + 3600),
        "{other_app}": lambda: _jwt_with(iss="999"),
        "{from_the_future}": lambda: _jwt_with(iat=now + 300, exp=now + 500),
    }
    if authorization:
        for placeholder, make in tokens.items():
            authorization = (
                authorization.replace(placeholder, make()) if placeholder in authorization else authorization
            )
    headers = {"authorization": authorization} if authorization else {}

    response = http.get("/app", headers=headers)

    assert response.status_code == 401
    [violation] = take_violations(gh)
    assert "[unauthorized]" in violation and reason in violation
    assert http.get("/app", headers=app_auth()).json()["id"] == APP_ID


def test_an_issued_installation_token_works_and_a_bogus_one_is_401(gh: GitHubDouble, http: httpx.Client) -> None:
    auth = installation_auth(http, installation_id=42)

    assert http.get("/repos/octo/app", headers=auth).status_code == 200
    assert (
        http.get("/repos/octo/app", headers={"authorization": "Bearer " + auth["authorization"][6:]}).status_code == 200
    )
    assert http.get("/repos/octo/app", headers={"authorization": "token ghs_bogus"}).status_code == 401
    assert http.get("/repos/octo/app", headers=app_auth()).status_code == 401
    gh.expire_tokens()
    assert http.get("/repos/octo/app", headers=auth).status_code == 401

    assert gh.tokens_issued == 1
    assert [c.installation_id for c in gh.calls("GET", "/repos/{owner}/{repo}")] == [42, 42, None, None, None]
    assert len(take_violations(gh)) == 3


def test_a_token_reaches_only_its_installations_repositories(gh: GitHubDouble, http: httpx.Client) -> None:
    gh.add_installation(9, account="octo", repositories=["octo/app"])
    auth = installation_auth(http, installation_id=9)

    assert http.get("/repos/octo/app", headers=auth).status_code == 200
    assert http.get("/repos/octo/secret", headers=auth).status_code == 404
    assert "cannot see octo/secret" in take_violations(gh)[0]


def test_access_tokens_follow_github(gh: GitHubDouble, http: httpx.Client) -> None:
    gh.add_installation(5, permissions={"issues": "read", "metadata": "read"})
    gh.add_installation(6, suspended=True)

    created = http.post("/app/installations/5/access_tokens", headers=app_auth())
    too_much = http.post(
        "/app/installations/5/access_tokens", json={"permissions": {"issues": "write"}}, headers=app_auth()
    )
    suspended = http.post("/app/installations/6/access_tokens", headers=app_auth())

    assert created.status_code == 201
    body = created.json()
    assert body["token"].startswith("ghs_") and body["permissions"] == {"issues": "read", "metadata": "read"}
    expires = time.mktime(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert 3500 < expires - time.time() <= 3600
    assert (too_much.status_code, suspended.status_code) == (422, 403)


def test_queued_failures_come_first_then_the_default_answer(gh: GitHubDouble, http: httpx.Client) -> None:
    auth = installation_auth(http)
    gh.respond("POST", COMMENTS, 502, times=2)

    statuses = [
        http.post("/repos/octo/app/issues/1/comments", json={"body": "hi"}, headers=auth).status_code for _ in range(3)
    ]

    assert statuses == [502, 502, 201]
    assert len(gh.issue_comments[("octo", "app", 1)]) == 1


def test_a_secondary_rate_limit_carries_retry_after(gh: GitHubDouble, http: httpx.Client) -> None:
    auth = installation_auth(http)
    gh.respond("POST", COMMENTS, 403, json=SECONDARY_RATE_LIMIT, headers={"retry-after": "3"})
    gh.respond("POST", COMMENTS, 429, headers={"retry-after": "1"})

    first = http.post("/repos/octo/app/issues/1/comments", json={"body": "hi"}, headers=auth)
    second = http.post("/repos/octo/app/issues/1/comments", json={"body": "hi"}, headers=auth)

    assert (first.status_code, first.headers["retry-after"]) == (403, "3")
    assert "secondary rate limit" in first.json()["message"]
    assert (second.status_code, second.headers["retry-after"]) == (429, "1")


def test_a_handler_replaces_the_default(gh: GitHubDouble, http: httpx.Client) -> None:
    auth = installation_auth(http)
    gh.handler("GET", "/repos/{owner}/{repo}", lambda call: Reply(404) if call.path_params["repo"] == "gone" else None)

    assert http.get("/repos/octo/gone", headers=auth).status_code == 404
    assert http.get("/repos/octo/here", headers=auth).json()["full_name"] == "octo/here"


def test_requests_from_many_threads_are_all_served(gh: GitHubDouble, http: httpx.Client) -> None:
    auth = installation_auth(http)

    def post(n: int) -> None:
        http.post("/repos/octo/app/issues/1/comments", json={"body": f"#{n}"}, headers=auth).raise_for_status()

    threads = [threading.Thread(target=post, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    comments = gh.issue_comments[("octo", "app", 1)]
    assert len({c["id"] for c in comments}) == 16 == len(gh.calls("POST", COMMENTS))


def test_contents_are_base64_like_github_and_missing_files_404(gh: GitHubDouble, http: httpx.Client) -> None:
    auth = installation_auth(http)
    gh.files[("octo", "app", ".github/nofx.yml", None)] = b"git_mode: basic\n"
    gh.files[("octo", "app", ".github/nofx.yml", "dev")] = b"git_mode: hidden\n"

    main = http.get("/repos/octo/app/contents/.github/nofx.yml", headers=auth).json()
    dev = http.get("/repos/octo/app/contents/.github/nofx.yml", params={"ref": "dev"}, headers=auth).json()
    raw = http.get(
        "/repos/octo/app/contents/.github/nofx.yml", headers=auth | {"accept": "application/vnd.github.raw+json"}
    )
    missing = http.get("/repos/octo/app/contents/README.md", headers=auth)

    assert main["encoding"] == "base64" and base64.b64decode(main["content"]) == b"git_mode: basic\n"
    assert main["sha"] == hashlib.sha1(b"blob 16\0git_mode: basic\n", usedforsecurity=False).hexdigest()
    assert base64.b64decode(dev["content"]) == b"git_mode: hidden\n"
    assert raw.content == b"git_mode: basic\n"
    assert missing.status_code == 404
    gh.assert_clean()


def test_pull_requests_are_looked_up_by_head_and_not_duplicated(gh: GitHubDouble, http: httpx.Client) -> None:
    auth = installation_auth(http)
    create = {"title": "Add a cart", "head": "nofx/1-cart", "base": "main", "body": "Closes #1"}

    first = http.post("/repos/octo/app/pulls", json=create, headers=auth)
    again = http.post("/repos/octo/app/pulls", json=create, headers=auth)
    found = http.get("/repos/octo/app/pulls", params={"head": "octo:nofx/1-cart"}, headers=auth).json()
    bare = http.get("/repos/octo/app/pulls", params={"head": "nofx/1-cart"}, headers=auth)

    assert first.status_code == 201 and first.json()["head"]["ref"] == "nofx/1-cart"
    assert again.status_code == 422 and "already exists" in again.json()["errors"][0]["message"]
    assert [p["number"] for p in found] == [first.json()["number"]]
    assert bare.status_code == 422 and "user:ref-name" in take_violations(gh)[0]


def test_review_comments_must_land_on_the_diff(gh: GitHubDouble, http: httpx.Client) -> None:
    auth = installation_auth(http)
    pull = gh.add_pull("octo", "app", head="feature", user="octocat")
    gh.pull_files[("octo", "app", pull["number"])] = [
        {"filename": "cart.py", "patch": "@@ -1,2 +1,3 @@\n import os\n+import sys\n print(os)"}
    ]
    url = f"/repos/octo/app/pulls/{pull['number']}/reviews"

    outside = {"event": "COMMENT", "body": "x", "comments": [{"path": "cart.py", "line": 9, "body": "here?"}]}
    on_diff = {"event": "COMMENT", "body": "x", "comments": [{"path": "cart.py", "line": 2, "body": "sys unused"}]}

    refused = http.post(url, json=outside, headers=auth)
    accepted = http.post(url, json=on_diff, headers=auth)

    assert refused.status_code == 422 and refused.json()["errors"] == ["Line could not be resolved"]
    assert accepted.status_code == 200 and accepted.json()["state"] == "COMMENTED"
    [comment] = gh.review_comments[("octo", "app", pull["number"])]
    assert (comment["path"], comment["line"], comment["pull_request_review_id"]) == (
        "cart.py",
        2,
        accepted.json()["id"],
    )


def test_the_app_cannot_approve_its_own_pull_request(gh: GitHubDouble, http: httpx.Client) -> None:
    auth = installation_auth(http)
    pull = gh.add_pull("octo", "app", head="nofx/2-x")

    response = http.post(f"/repos/octo/app/pulls/{pull['number']}/reviews", json={"event": "APPROVE"}, headers=auth)

    assert response.status_code == 422 and "your own pull request" in response.json()["message"]


def test_a_manifest_code_converts_once_and_its_key_signs_jwts(gh: GitHubDouble, http: httpx.Client) -> None:
    converted = http.post("/app-manifests/abc123/conversions")
    reused = http.post("/app-manifests/abc123/conversions")

    assert converted.status_code == 201 and reused.status_code == 404
    app = converted.json()
    assert app["id"] == APP_ID and app["pem"].startswith("-----BEGIN")
    jwt_headers = {"authorization": f"Bearer {make_app_jwt(app['id'], app['pem'])}"}
    assert http.get("/app", headers=jwt_headers).status_code == 200


def test_paging_follows_githubs_link_header(gh: GitHubDouble, http: httpx.Client) -> None:
    auth = installation_auth(http)
    for n in range(5):
        gh.add_issue_comment("octo", "app", 1, f"c{n}", user="octocat")

    first = http.get("/repos/octo/app/issues/1/comments", params={"per_page": 2}, headers=auth)
    bodies = [c["body"] for c in first.json()]
    next_url = first.links["next"]["url"]
    while next_url:
        page = http.get(next_url, headers=auth)
        bodies += [c["body"] for c in page.json()]
        next_url = page.links.get("next", {}).get("url")

    assert bodies == [f"c{n}" for n in range(5)]
    assert 'rel="last"' in first.headers["link"]


def _exercise_every_operation(gh: GitHubDouble, http: httpx.Client) -> None:
    """One valid request per operation of the subset, so every default answer gets checked."""
    auth = installation_auth(http)
    gh.files[("octo", "app", "docs/a.md", None)] = "# A\n"
    gh.pull_files[("octo", "app", 1)] = [{"filename": "a.py", "patch": "@@ -0,0 +1 @@\n+x = 1"}]
    repo = "/repos/octo/app"
    http.get("/app", headers=app_auth())
    http.get("/app/installations", headers=app_auth())
    http.get("/app/installations/7", headers=app_auth())
    delivery = gh.add_hook_delivery("guid-1", "issues", action="opened", installation_id=7, at=time.time())
    http.get("/app/hook/deliveries", headers=app_auth())
    http.post(f"/app/hook/deliveries/{delivery['id']}/attempts", headers=app_auth())
    http.post("/app-manifests/code-1/conversions")
    http.get("/installation/repositories", headers=auth)
    http.get(repo, headers=auth)
    http.get(f"{repo}/collaborators/octocat/permission", headers=auth)
    issue_comment = http.post(f"{repo}/issues/1/comments", json={"body": "hi"}, headers=auth).json()
    http.patch(f"{repo}/issues/comments/{issue_comment['id']}", json={"body": "edited"}, headers=auth)
    http.get(f"{repo}/issues/1/comments", headers=auth)
    http.get(f"{repo}/issues/1", headers=auth)
    http.post(f"{repo}/issues/1/reactions", json={"content": "eyes"}, headers=auth)
    http.post(f"{repo}/issues/comments/{issue_comment['id']}/reactions", json={"content": "+1"}, headers=auth)
    http.get(f"{repo}/contents/docs/a.md", headers=auth)
    http.get(f"{repo}/contents/docs", headers=auth)
    run = http.post(
        f"{repo}/check-runs", json={"name": "nofx", "head_sha": "a" * 40, "external_id": "r1"}, headers=auth
    )
    run_id = run.json()["id"]
    http.patch(
        f"{repo}/check-runs/{run_id}",
        json={"conclusion": "success", "output": {"title": "Done", "summary": "All good"}},
        headers=auth,
    )
    http.get(f"{repo}/check-runs/{run_id}", headers=auth)
    http.get(f"{repo}/commits/{'a' * 40}/check-runs", params={"check_name": "nofx"}, headers=auth)
    pull = http.post(f"{repo}/pulls", json={"title": "T", "head": "feature", "base": "main"}, headers=auth).json()
    assert pull["number"] == 1
    http.get(f"{repo}/pulls", params={"state": "all", "head": "octo:feature"}, headers=auth)
    http.get(f"{repo}/pulls/1", headers=auth)
    http.patch(f"{repo}/pulls/1", json={"body": "Closes #1", "state": "open"}, headers=auth)
    http.get(f"{repo}/pulls/1/files", headers=auth)
    http.post(f"{repo}/pulls/1/requested_reviewers", json={"reviewers": ["octocat"]}, headers=auth)
    review = {"event": "COMMENT", "body": "LGTM", "comments": [{"path": "a.py", "line": 1, "body": "nit"}]}
    http.post(f"{repo}/pulls/1/reviews", json=review, headers=auth)
    http.get(f"{repo}/pulls/1/reviews", headers=auth)
    comments = http.get(f"{repo}/pulls/1/comments", headers=auth).json()
    http.post(f"{repo}/pulls/1/comments/{comments[0]['id']}/replies", json={"body": "fixed"}, headers=auth)
    http.post(f"{repo}/pulls/comments/{comments[0]['id']}/reactions", json={"content": "rocket"}, headers=auth)
    http.get(f"{repo}/compare/main...feature", headers=auth)
    http.get(f"{repo}/branches/main", headers=auth)
    http.get("/users/octocat", headers=auth)
    http.get(f"/users/{gh.bot_login}", headers=auth)
    _exercise_ci(gh, http, auth, repo)
    assert http.delete("/installation/token", headers=auth).status_code == 204  # last: the token stops working


def _exercise_ci(gh: GitHubDouble, http: httpx.Client, auth: dict[str, str], repo: str) -> None:
    sha = "b" * 40
    workflow = gh.ci_workflow_run("octo", "app", sha, "CI", branch="feature")
    job = gh.ci_check_run("octo", "app", sha, "test", run=workflow)
    gh.finish_ci(job, "failure", title="1 failed", annotations=[{"message": "boom"}], log="ok\nFAILED x\n")
    gh.finish_ci(workflow, "failure")
    http.get(f"{repo}/commits/{sha}/check-suites", headers=auth)
    http.get(f"{repo}/check-runs/{job['id']}/annotations", headers=auth)
    http.get(f"{repo}/actions/runs", params={"head_sha": sha}, headers=auth)
    http.get(f"{repo}/actions/runs/{workflow['id']}/jobs", headers=auth)
    logs = http.get(f"{repo}/actions/jobs/{job['id']}/logs", headers=auth, follow_redirects=False)
    assert logs.status_code == 302


def test_default_answers_fit_githubs_response_schemas(gh: GitHubDouble, http: httpx.Client) -> None:
    _exercise_every_operation(gh, http)

    spec = openapi.load()
    calls = gh.calls()
    assert {c.operation_id for c in calls} == {op.operation_id for op in spec.operations}
    problems = [
        f"{c.method} {c.template} -> {c.status}: {problem}"
        for c in calls
        for problem in spec.operation(c.method, c.template or "").validate_response(c.status, c.response)
    ]
    assert problems == []
    assert all(c.status < 400 for c in calls), [
        (c.method, c.path, c.status, c.response) for c in calls if c.status >= 400
    ]


def test_job_logs_answer_with_a_redirect_to_storage_that_refuses_tokens(gh: GitHubDouble, http: httpx.Client) -> None:
    auth = installation_auth(http)
    job = gh.ci_check_run("octo", "app", "c" * 40, "test")
    gh.finish_ci(job, "failure", log="line 1\nAssertionError\n")

    answer = http.get(f"/repos/octo/app/actions/jobs/{job['id']}/logs", headers=auth, follow_redirects=False)
    assert answer.status_code == 302
    assert http.get(answer.headers["location"]).text == "line 1\nAssertionError\n"
    assert http.get(answer.headers["location"], headers=auth).status_code == 400
    assert [v.kind for v in gh.violations] == ["unauthorized"]
    gh.violations.clear()


def test_leaving_the_block_raises_on_violations() -> None:
    double = GitHubDouble(app_id=APP_ID, public_key_pem=app_key().public_pem)
    with pytest.raises(AssertionError, match=r"1 request\(s\) GitHub would refuse"), double:
        httpx.get(f"{double.base_url}/nope")


def test_openapi_nullable_becomes_json_schema_null() -> None:
    spec = openapi.load()
    op = spec.operation("PATCH", "/repos/{owner}/{repo}/check-runs/{check_run_id}")
    check_run = op.response_schema(200)
    assert check_run is not None

    sample = spec.sample(check_run)

    assert sample["conclusion"] is None and sample["completed_at"] is None
    assert spec.errors(check_run, sample) == []
    assert spec.errors(check_run, {**sample, "conclusion": "maybe"})


def test_payloads_are_real_and_signed_like_github() -> None:
    payload = load_payload("issue_comment.created", comment__body="/nofx add a cart", installation={"id": 99})
    body = json.dumps(payload).encode()

    headers = webhook_headers("issue_comment", body, "s3cret", delivery_id="d-1")

    assert payload["comment"]["body"] == "/nofx add a cart" and payload["installation"]["id"] == 99
    assert load_payload("issue_comment.created")["comment"]["body"] != "/nofx add a cart"
    # The example from GitHub's "Validating webhook deliveries" page.
    assert sign(b"Hello, World!", "It's a Secret to Everybody") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )
    assert headers["X-Hub-Signature-256"] == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-GitHub-Event"] == "issue_comment" and headers["X-GitHub-Delivery"] == "d-1"
    assert headers["X-GitHub-Hook-Installation-Target-Type"] == "integration"
    assert headers["User-Agent"].startswith("GitHub-Hookshot/")
