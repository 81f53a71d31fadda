"""Where a request lives: the issue or pull request thread named by a webhook payload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Thread:
    """An issue or pull request of a repository of an installation; enough to answer on GitHub."""

    installation_id: int
    owner: str
    repo: str
    number: int
    kind: str  # "issue" | "pull_request"
    default_branch: str
    clone_url: str | None
    html_url: str | None
    repository_id: int | None = None  # GitHub's id of the repository: a name can later belong to another one

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    @property
    def url_vars(self) -> dict[str, Any]:
        return {"owner": self.owner, "repo": self.repo, "issue_number": self.number}

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> Thread:
        """Read the thread from an `issues`, `issue_comment`, `pull_request*` payload."""
        repository = data["repository"]
        if "pull_request" in data:
            item, kind = data["pull_request"], "pull_request"
        else:
            item = data["issue"]
            kind = "pull_request" if item.get("pull_request") else "issue"
        return cls(
            installation_id=data["installation"]["id"],
            owner=repository["owner"]["login"],
            repo=repository["name"],
            number=item["number"],
            kind=kind,
            default_branch=repository.get("default_branch") or "main",
            clone_url=repository.get("clone_url"),
            html_url=item.get("html_url"),
            repository_id=repository.get("id"),
        )
