"""Prometheus metrics: the web registry, run metrics read from the database, worker metrics shared through Redis."""
