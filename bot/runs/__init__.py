"""Runs and their steps: the one writer of status, queries, the step engine and its handler contract, planning,
progress, memory, checkpoints, artifacts, RCA bundles and the report on GitHub."""
