"""The `nofx` command line: serve, web, worker, replay, rca, run (local mode), review; the embedded Valkey process."""
