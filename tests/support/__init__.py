"""Test support: the GitHub double, its OpenAPI checker, and real webhook payloads."""
