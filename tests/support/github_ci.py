"""The repository's own CI as the GitHub double keeps it: other Apps' check runs and suites, Actions workflow runs,
their jobs, annotations and logs (served behind a redirect, like GitHub's short-lived log storage).

Tests script CI with `ci_check_run`, `ci_workflow_run` and `finish_ci`; the double answers the checks and Actions
routes from this state, and `ci_webhook` builds the matching delivery from a real example payload.
"""

from __future__ import annotations

from typing import Any

from .github_resources import Call, GitHubResources, Reply, _node_id, _route, _stable_id, error_body

ACTIONS_APP_ID = 15368
ACTIONS_SLUG = "github-actions"
BLOB_PREFIX = "/_blob/job-logs/"


class CiResources(GitHubResources):
    """CI state: check runs of other Apps live in `check_runs` next to nofx's own, so `list-for-ref` sees both."""

    def _init_ci(self) -> None:
        self.workflow_runs: dict[int, dict[str, Any]] = {}
        self.workflow_jobs: dict[int, list[dict[str, Any]]] = {}
        self.annotations: dict[int, list[dict[str, Any]]] = {}
        self.job_logs: dict[int, bytes] = {}

    def actions_app(self) -> dict[str, Any]:
        owner = self.user("github", kind="Organization")
        return self._build(
            "integration",
            id=ACTIONS_APP_ID,
            slug=ACTIONS_SLUG,
            node_id=_node_id("A_", ACTIONS_APP_ID),
            owner=owner,
            name="GitHub Actions",
            description="Automate your workflow from idea to production",
            external_url="https://help.github.com/en/actions",
            html_url=f"{self.html_url}/apps/github-actions",
            created_at="2018-07-30T09:30:17Z",
            updated_at="2019-12-10T19:04:12Z",
            permissions={"checks": "write", "contents": "write"},
            events=["check_run", "check_suite"],
        )

    def ci_workflow_run(
        self, owner: str, repo: str, sha: str, name: str, *, branch: str, status: str = "in_progress"
    ) -> dict[str, Any]:
        """An Actions workflow run on `sha`; its jobs are check runs made with `ci_check_run(..., run=...)`."""
        rid = next(self._ids)
        api = self._api(f"/repos/{owner}/{repo}/actions/runs/{rid}")
        repository = self.repository(owner, repo)
        run = self._build(
            "workflow-run",
            id=rid,
            name=name,
            node_id=_node_id("WFR_", rid),
            head_branch=branch,
            head_sha=sha,
            path=".github/workflows/ci.yml",
            display_title=name,
            run_number=len(self.workflow_runs) + 1,
            event="pull_request",
            status=status,
            conclusion=None,
            workflow_id=_stable_id(name),
            check_suite_id=self._suite_id(ACTIONS_SLUG, sha),
            url=api,
            html_url=f"{self.html_url}/{owner}/{repo}/actions/runs/{rid}",
            jobs_url=f"{api}/jobs",
            logs_url=f"{api}/logs",
            check_suite_url=self._api(f"/repos/{owner}/{repo}/check-suites/{self._suite_id(ACTIONS_SLUG, sha)}"),
            artifacts_url=f"{api}/artifacts",
            cancel_url=f"{api}/cancel",
            rerun_url=f"{api}/rerun",
            workflow_url=self._api(f"/repos/{owner}/{repo}/actions/workflows/{_stable_id(name)}"),
            pull_requests=[],
            created_at=self._now(),
            updated_at=self._now(),
            repository=repository,
            head_repository=repository,
        )
        self.workflow_runs[rid] = run
        self.workflow_jobs[rid] = []
        return run

    def ci_check_run(
        self,
        owner: str,
        repo: str,
        sha: str,
        name: str,
        *,
        run: dict[str, Any] | None = None,
        app: str = ACTIONS_SLUG,
        status: str = "in_progress",
    ) -> dict[str, Any]:
        """A check run of another App (Actions by default) on `sha`; with `run`, it is a job of that workflow run."""
        cid = next(self._ids)
        api = self._api(f"/repos/{owner}/{repo}/check-runs/{cid}")
        html = f"{self.html_url}/{owner}/{repo}/runs/{cid}"
        if run is not None:
            html = f"{run['html_url']}/job/{cid}"
        check = self._build(
            "check-run",
            id=cid,
            node_id=_node_id("CR_", cid),
            head_sha=sha,
            name=name,
            external_id="",
            url=api,
            html_url=html,
            details_url=html,
            status=status,
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
            check_suite={"id": self._suite_id(app, sha)},
            app=self.actions_app()
            if app == ACTIONS_SLUG
            else {**self.actions_app(), "slug": app, "id": _stable_id(app)},
            pull_requests=[],
        )
        self.check_runs[cid] = check
        self._check_run_repo[cid] = (owner, repo)
        if run is not None:
            self.workflow_jobs[run["id"]].append(self._job(owner, repo, run, check))
        return check

    def finish_ci(
        self,
        item: dict[str, Any],
        conclusion: str,
        *,
        title: str | None = None,
        summary: str | None = None,
        annotations: list[dict[str, Any]] | None = None,
        log: str | None = None,
        failed_step: str | None = None,
    ) -> None:
        """Complete a CI check run (its job too) or workflow run, with what it reports."""
        if "jobs_url" in item:  # a workflow run
            item.update(status="completed", conclusion=conclusion, updated_at=self._now())
            return
        item.update(status="completed", conclusion=conclusion, completed_at=self._now())
        item["output"].update(title=title, summary=summary, annotations_count=len(annotations or []))
        self.annotations[item["id"]] = [self._annotation(item, a) for a in annotations or []]
        if log is not None:
            self.job_logs[item["id"]] = log.encode()
        for jobs in self.workflow_jobs.values():
            for job in jobs:
                if job["id"] == item["id"]:
                    job.update(status="completed", conclusion=conclusion, completed_at=self._now())
                    job["steps"] = [
                        {"name": "Set up job", "status": "completed", "conclusion": "success", "number": 1},
                        {
                            "name": failed_step or "Run tests",
                            "status": "completed",
                            "conclusion": conclusion,
                            "number": 2,
                        },
                    ]

    def serve_blob(self, call: Call) -> Reply:
        """The log storage a log redirect points to: no API auth, and refusing any token sent to it."""
        if call.headers.get("authorization"):
            return self._refuse(call, "unauthorized", 400, "Bad Request", "a token was sent to the log storage")
        job_id = int(call.path.removeprefix(self.path_prefix).removeprefix(BLOB_PREFIX).split("?")[0])
        log = self.job_logs.get(job_id)
        if log is None:
            return Reply(404, error_body(404))
        return Reply(200, None, {"content-type": "text/plain"}, body=log)

    def _suite_id(self, app: str, sha: str) -> int:
        return _stable_id(f"{app}:{sha}")

    def _job(self, owner: str, repo: str, run: dict[str, Any], check: dict[str, Any]) -> dict[str, Any]:
        return self._build(
            "job",
            id=check["id"],
            run_id=run["id"],
            run_url=run["url"],
            node_id=_node_id("CR_", check["id"]),
            head_sha=check["head_sha"],
            head_branch=run["head_branch"],
            url=self._api(f"/repos/{owner}/{repo}/actions/jobs/{check['id']}"),
            html_url=check["html_url"],
            status="in_progress",
            conclusion=None,
            created_at=self._now(),
            started_at=self._now(),
            completed_at=None,
            name=check["name"],
            steps=[],
            check_run_url=check["url"],
            labels=["ubuntu-latest"],
            workflow_name=run["name"],
        )

    def _annotation(self, check: dict[str, Any], note: dict[str, Any]) -> dict[str, Any]:
        return {
            "path": note.get("path", "test_calc.py"),
            "start_line": note.get("start_line", 1),
            "end_line": note.get("end_line", note.get("start_line", 1)),
            "start_column": None,
            "end_column": None,
            "annotation_level": note.get("annotation_level", "failure"),
            "title": note.get("title"),
            "message": note.get("message", ""),
            "raw_details": None,
            "blob_href": f"{self.html_url}/blob/{check['head_sha']}/{note.get('path', 'test_calc.py')}",
        }

    # ------------------------------------------------------------ default answers

    @_route("checks/list-suites-for-ref")
    def _list_suites(self, call: Call) -> Reply:
        p = call.path_params
        suites: dict[int, dict[str, Any]] = {}
        for rid, check in self.check_runs.items():
            if self._check_run_repo.get(rid) != (p["owner"], p["repo"]) or check["head_sha"] != p["ref"]:
                continue
            suite = suites.setdefault(
                check["check_suite"]["id"],
                self._build(
                    "check-suite",
                    id=check["check_suite"]["id"],
                    node_id=_node_id("CS_", check["check_suite"]["id"]),
                    head_sha=check["head_sha"],
                    status="completed",
                    conclusion="success",
                    app=check["app"],
                    url=self._api(f"/repos/{p['owner']}/{p['repo']}/check-suites/{check['check_suite']['id']}"),
                    repository=self.repository(p["owner"], p["repo"]),
                    latest_check_runs_count=0,
                    check_runs_url=self._api(
                        f"/repos/{p['owner']}/{p['repo']}/check-suites/{check['check_suite']['id']}/check-runs"
                    ),
                    pull_requests=[],
                ),
            )
            suite["latest_check_runs_count"] += 1
            if check["status"] != "completed":
                suite.update(status="in_progress", conclusion=None)
            elif check["conclusion"] not in ("success", "neutral", "skipped") and suite["status"] == "completed":
                suite["conclusion"] = check["conclusion"]
        listed = list(suites.values())
        page = self._page(call, listed)
        page.json = {"total_count": len(listed), "check_suites": page.json}
        return page

    @_route("checks/list-annotations")
    def _list_annotations(self, call: Call) -> Reply:
        check = self._check_run_or_404(call)
        if isinstance(check, Reply):
            return check
        return self._page(call, self.annotations.get(check["id"], []))

    @_route("actions/list-workflow-runs-for-repo")
    def _list_workflow_runs(self, call: Call) -> Reply:
        p, q = call.path_params, call.query
        runs = [
            run
            for run in self.workflow_runs.values()
            if run["repository"]["full_name"] == f"{p['owner']}/{p['repo']}"
            and q.get("head_sha", run["head_sha"]) == run["head_sha"]
        ]
        page = self._page(call, runs)
        page.json = {"total_count": len(runs), "workflow_runs": page.json}
        return page

    @_route("actions/list-jobs-for-workflow-run")
    def _list_jobs(self, call: Call) -> Reply:
        jobs = self.workflow_jobs.get(call.path_params["run_id"])
        if jobs is None:
            return Reply(404, error_body(404))
        page = self._page(call, jobs)
        page.json = {"total_count": len(jobs), "jobs": page.json}
        return page

    @_route("actions/download-job-logs-for-workflow-run")
    def _job_logs(self, call: Call) -> Reply:
        job_id = call.path_params["job_id"]
        if job_id not in self.job_logs:
            return Reply(404, error_body(404))
        location = f"{self.base_url}{BLOB_PREFIX}{job_id}?sig=short-lived"
        return Reply(302, None, {"location": location})
