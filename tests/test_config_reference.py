"""README's configuration reference is generated from the schema: this test is the guard that they agree."""

from __future__ import annotations

import dataclasses

from bot import config_reference
from bot.repo_config import RepoConfig, schema_keys


def test_readme_lists_every_key_with_its_default_as_the_schema_says() -> None:
    readme = config_reference.README.read_text(encoding="utf-8")
    start = readme.index(config_reference.START)
    end = readme.index(config_reference.END) + len(config_reference.END)
    assert readme[start:end] == config_reference.table(), (
        "README.md's configuration reference is out of date: run `python -m bot.config_reference --write`"
    )


def test_the_schema_covers_every_field_of_the_config() -> None:
    def fields(cls: type, prefix: str = "") -> list[str]:
        names = []
        for field in dataclasses.fields(cls):
            default = getattr(RepoConfig(), field.name) if not prefix else None
            kind = type(default) if default is not None and dataclasses.is_dataclass(default) else None
            if kind is not None:
                names += fields(kind, field.name + ".")
            else:
                names.append(prefix + field.name)
        return names

    assert fields(RepoConfig) == [key for key, _allowed in schema_keys()]


def test_the_table_starts_with_extends_and_shows_defaults_as_yaml() -> None:
    rows = {key: default for key, default, _allowed in config_reference.rows()}
    assert next(iter(rows)) == "_extends"
    assert rows["review.auto"] == "`true`" and rows["model"] == "none"
    assert rows["review.skip_paths"].startswith("`[**/*.lock, ")  # a list, as flow YAML
