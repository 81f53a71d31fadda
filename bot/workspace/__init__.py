"""Git on disk: mirrors and run worktrees, the git runner, the diff parser, the sandbox, edits, repository context."""
