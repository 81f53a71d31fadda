"""Where GitHub takes review comments: the lines each hunk shows, by path and side, from a parsed diff."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bot.workspace.diffs import LEFT, RIGHT, FileDiff


@dataclass(frozen=True)
class Commentable:
    """Where GitHub accepts review comments: (path, side) → line numbers, and the same split by hunk."""

    lines: dict[tuple[str, str], set[int]]
    hunks: dict[tuple[str, str], tuple[frozenset[int], ...]] = field(default_factory=dict)

    def same_hunk(self, path: str, side: str, start_line: int, line: int) -> bool:
        """True if both ends of a multi-line comment fall in one hunk, which GitHub requires."""
        return any(start_line in hunk and line in hunk for hunk in self.hunks.get((path, side), ()))

    @property
    def paths(self) -> set[str]:
        """Every path that has at least one commentable line."""
        return {path for path, _side in self.lines}


# --- where comments may go -------------------------------------------------------------------------------------


def commentable(files: Iterable[FileDiff]) -> Commentable:
    """The (path, side, line) set GitHub accepts review comments on, from the diff's hunks."""
    lines: dict[tuple[str, str], set[int]] = {}
    hunks: dict[tuple[str, str], list[frozenset[int]]] = {}
    for diff in files:
        for hunk in diff.hunks:
            for side, numbers in ((RIGHT, hunk.right_lines()), (LEFT, hunk.left_lines())):
                if numbers:
                    lines.setdefault((diff.path, side), set()).update(numbers)
                    hunks.setdefault((diff.path, side), []).append(frozenset(numbers))
    return Commentable(lines, {key: tuple(value) for key, value in hunks.items()})
