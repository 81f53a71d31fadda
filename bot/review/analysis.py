"""Reading a diff with the model, chunk by chunk: shared by the App's review passes and by `nofx review`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.llm import prompts
from bot.llm.router import Budget, BudgetExceeded, LLMResponse, Message, ToolSpec, untrusted, user_message
from bot.repo_config import RepoConfig
from bot.review.chunks import Chunk, Skipped, plan_chunks
from bot.review.findings import REPORT_FINDINGS_SCHEMA, Finding, merge_duplicates, parse_findings, severity_at_least
from bot.workspace.diffs import FileDiff, parse_git_diff
from bot.workspace.worktrees import Worktree

MAX_CHUNK_TOKENS = 12_000  # per LLM call: room for the prompt and a long answer in any current model
MAX_OUTPUT_TOKENS = 8_192
REPORT_FINDINGS = ToolSpec(
    "report_findings",
    "Report every finding in this part of the diff, in one call; an empty list when there is nothing to report.",
    REPORT_FINDINGS_SCHEMA,
)


class Model(Protocol):
    """What the review asks of a model: the router itself, or a step's view of it (usage charged to the step)."""

    async def call(
        self,
        *,
        purpose: str,
        system: str,
        messages: list[Message],
        tools: list[ToolSpec],
        model: str | None = None,
        max_tokens: int = 4096,
        budget: Budget | None = None,
    ) -> LLMResponse: ...


@dataclass
class Analysis:
    """What the model found in a diff, which files it read, which it did not and why, and what it cost."""

    findings: list[Finding]
    reviewed: list[str]
    skipped: list[Skipped]
    llm_calls: int = 0
    cost_usd: float = 0.0


async def analyse(
    llm: Model,
    files: Sequence[FileDiff],
    config: RepoConfig,
    *,
    before_call: Callable[[], None] = lambda: None,
    max_chunk_tokens: int = MAX_CHUNK_TOKENS,
) -> Analysis:
    """Review `files` chunk by chunk (`plan_chunks`), one `report_findings` call each; duplicates merged.

    `before_call` runs before every LLM call and may raise to stop (a superseded pass). When the repository's
    LLM budget (`policy.max_cost_usd`) runs out, the files not yet read are listed as skipped with that reason.
    """
    chunks, skipped = plan_chunks(files, skip=config.review.skips, max_tokens_per_chunk=max_chunk_tokens)
    analysis = Analysis([], [], list(skipped))
    budget = Budget(config.policy.max_cost_usd)
    system = prompts.load("review")
    found: list[Finding] = []
    for index, chunk in enumerate(chunks):
        before_call()
        intro = f"Part {index + 1} of {len(chunks)} of the pull request's diff. Report findings for this part only."
        try:
            response = await llm.call(
                purpose="review",
                system=system,
                messages=[user_message(f"{intro}\n\n{untrusted('diff', chunk.text)}")],
                tools=[REPORT_FINDINGS],
                model=config.model,
                max_tokens=MAX_OUTPUT_TOKENS,
                budget=budget,
            )
        except BudgetExceeded as exc:
            analysis.skipped += _not_reached(chunks[index:], analysis.reviewed, str(exc))
            break
        analysis.llm_calls += 1
        analysis.cost_usd += response.usage.cost_usd
        for call in response.tool_calls:
            found += parse_findings(call.input)
        analysis.reviewed += [path for path in chunk.paths if path not in analysis.reviewed]
    analysis.findings = merge_duplicates(found)
    return analysis


async def failing_in_worktree(llm: Model, tree: Worktree, config: RepoConfig) -> list[Finding]:
    """The findings on a run's change so far (against where its branch started) that reach `review.fail_on`.

    `review.before_pr` asks this before the pull request opens; the step context offers it as `review`.
    """
    text = await tree.git("diff", "--no-color", "--no-ext-diff", tree.start_sha)
    for path in [p for p in (await tree.git("ls-files", "-z", "--others", "--exclude-standard")).split("\0") if p]:
        # a new file as git shows it (exit code 1 means "they differ"); binary ones say so and are skipped later
        text += await tree.git("diff", "--no-color", "--no-index", "--", "/dev/null", path, check=False)
    analysis = await analyse(llm, parse_git_diff(text), config)
    return [f for f in analysis.findings if severity_at_least(f.severity, config.review.fail_on)]


def _not_reached(chunks: Sequence[Chunk], reviewed: list[str], why: str) -> list[Skipped]:
    paths = dict.fromkeys(path for chunk in chunks for path in chunk.paths)
    return [
        Skipped(path, f"only partly reviewed: {why}" if path in reviewed else f"not reviewed: {why}") for path in paths
    ]
