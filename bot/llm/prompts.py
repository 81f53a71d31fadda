"""LLM prompt templates: plain text files under `prompts/`, read at run time so they can be tuned without code."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

_DEFAULT_DIR = Path(__file__).resolve().parents[2] / "prompts"


@cache
def load(name: str) -> str:
    """The template `prompts/<name>.txt` (NOFX_PROMPTS_DIR overrides the directory, e.g. in the image)."""
    directory = Path(os.environ.get("NOFX_PROMPTS_DIR") or _DEFAULT_DIR)
    return (directory / f"{name}.txt").read_text(encoding="utf-8")
