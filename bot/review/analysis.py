"""Reading a diff with the model, chunk by chunk: shared by the App's review passes and by `nofx review`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.llm import prompts
from bot.llm.router import LLM, Budget, BudgetExceeded, ToolSpec, untrusted, user_message
from bot.repo_config import RepoConfig
from bot.review.chunks import Chunk, Skipped, plan_chunks
from bot.review.findings import REPORT_FINDINGS_SCHEMA, Finding, merge_duplicates, parse_findings
from bot.workspace.diffs import FileDiff

MAX_CHUNK_TOKENS = 12_000  # per LLM call: room for the prompt and a long answer in any current model
MAX_OUTPUT_TOKENS = 8_192
REPORT_FINDINGS = ToolSpec(
    "report_findings",
    "Report every finding in this part of the diff, in one call; an empty list when there is nothing to report.",
    REPORT_FINDINGS_SCHEMA,
)


@dataclass
class Analysis:
    """What the model found in a diff, which files it read, which it did not and why, and what it cost."""

    findings: list[Finding]
    reviewed: list[str]
    skipped: list[Skipped]
    llm_calls: int = 0
    cost_usd: float = 0.0


async def analyse(
    llm: LLM,
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


def _not_reached(chunks: Sequence[Chunk], reviewed: list[str], why: str) -> list[Skipped]:
    paths = dict.fromkeys(path for chunk in chunks for path in chunk.paths)
    return [
        Skipped(path, f"only partly reviewed: {why}" if path in reviewed else f"not reviewed: {why}") for path in paths
    ]
