"""What a sandboxed command did, and how its outcome is told to people and to the model.

One place says it, so a gate step, the model's `run_gate`, `setup` and a repair round describe a failure alike.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass

TAIL_LINES = 30
UNSAFE_NOTICE = (
    "WARNING: NOFX_SANDBOX=none: the operator turned the sandbox off; this command ran without isolation, "
    "seeing the machine as the nofx worker does."
)  # put in front of every public output of a command that ran so
_NOT_FOUND = (
    re.compile(r"^(?:/bin/)?sh: \d+: (?P<program>[^:\s]+): not found$", re.MULTILINE),  # dash
    re.compile(r"^(?:.*: )?(?P<program>[^:\s]+): command not found$", re.MULTILINE),  # bash
    re.compile(r"can't open file '(?P<program>[^']+)'", re.MULTILINE),
)


@dataclass(frozen=True)
class CommandResult:
    """What a command did: `exit_code` is None when it was killed for running out of time or disk."""

    exit_code: int | None
    output: str
    truncated: bool
    duration_s: float
    timed_out: bool
    isolation: str  # "bwrap" | "none"
    over_disk: bool = False
    reached: tuple[str, ...] = ()  # setup only: the `host:port`s its egress proxy connected it to
    refused: tuple[str, ...] = ()  # and those it refused (the output's last lines say why)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.over_disk

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of the output: where test runners and linters put their verdict."""
        return "\n".join(self.output.rstrip("\n").split("\n")[-lines:]) if self.output else ""

    def verdict(self, command: str, timeout_s: float) -> str:
        """How the command ended, in one sentence, with the hint for a missing program: the same words for a gate
        step's failure and for the model's `run_gate` answer."""
        if self.ok:
            return f"`{command}` passed ({self.isolation_words()})"
        if self.timed_out:
            how = f"timed out after {timeout_s:g} s"
        elif self.over_disk:
            how = "was stopped for writing more to disk (bytes or files) than the sandbox allows"
        elif self.exit_code is not None and self.exit_code < 0:
            how = f"was killed by {_signal_name(-self.exit_code)}"
        else:
            how = f"failed with exit code {self.exit_code}"
        message = f"`{command}` {how} ({self.isolation_words()})"
        hint = self.missing_program()
        return f"{message}. {hint}" if hint else message

    def describe_failure(self, command: str, timeout_s: float, *, lines: int = TAIL_LINES) -> str:
        """The verdict, then the last lines of output as plain text (each surface fences it once, itself)."""
        message = self.verdict(command, timeout_s)
        tail = self.tail(lines)
        if not tail.strip():
            return message + "; it printed nothing"
        return f"{message}. Last {lines} lines of output:\n{tail}"

    def isolation_words(self) -> str:
        """How the command was isolated, in words for the step output and the comment."""
        if self.isolation == "none":
            return "isolation: none, the operator turned the sandbox off with NOFX_SANDBOX=none"
        return f"isolation: {self.isolation}"

    def unsafe_notice(self) -> str:
        """The warning that leads the output of a command that ran without a sandbox."""
        return f"{UNSAFE_NOTICE}\n" if self.isolation == "none" else ""

    def missing_program(self) -> str | None:
        """For exit code 127: which program was not found, and how an operator makes it available."""
        if self.exit_code != 127:
            return None
        found = next((m.group("program") for p in _NOT_FOUND if (m := p.search(self.output))), None)
        what = f"`{found}` was not found" if found else "a program was not found"
        return (
            f"{what} in the sandbox (exit code 127). Sandboxed commands see the system directories, the directories "
            "on nofx's own PATH and those in NOFX_SANDBOX_PATHS, read-only: install the program there (or add its "
            "directory to NOFX_SANDBOX_PATHS on the nofx server), or install it with `setup` in .github/nofx.yml."
        )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
