"""`.github/nofx.yml` read as YAML strictly: no anchors, aliases, tags or merge keys, no duplicate keys, bounded size.

What comes back is plain data for the schema in `bot.repo_config` to check; a refusal names the key and line.
"""

from __future__ import annotations

import yaml

# Deeper than any real config, shallow enough that PyYAML's recursive composer never nears the stack limit.
MAX_DEPTH = 20
# A real config has a few dozen nodes; pure-Python PyYAML spends seconds on 64 KB of `[1,1,1,…]`.
MAX_NODES = 2000


class YamlRefused(ValueError):
    """The text is not YAML nofx reads: which key (or `(file)`), what is wrong, what is allowed, and where."""

    def __init__(self, key: str, problem: str, allowed: str, line: int | None = None) -> None:
        self.key = key
        self.problem = problem
        self.allowed = allowed
        self.line = line
        super().__init__(f"`{key}` {problem}; allowed: {allowed}")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, anchors, explicit tags, deep nesting or huge collections: the bombs and tricks.

    The pure-Python loader on purpose: libyaml's composer cannot be hooked, and 64 KB parse fast either way.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # the PyYAML stubs leave it untyped
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            raise _file_error(f"uses a YAML anchor or alias (line {line})", "plain YAML without & and *", line)
        if tag := getattr(event, "tag", None):
            tag = tag.replace("tag:yaml.org,2002:", "!!")
            raise _file_error(f"uses the YAML tag {tag} (line {line})", "plain YAML without ! tags", line)
        if self._depth >= MAX_DEPTH:
            raise _file_error(f"nests deeper than {MAX_DEPTH} levels (line {line})", "a shallow mapping", line)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _file_error(f"has more than {MAX_NODES} values (line {line})", "a short mapping", line)
        self._depth += 1
        try:
            # PyYAML passes the key node as `index` of a mapping value; the stubs say int
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= 1


def load_yaml(text: str) -> object:
    """The one YAML document in `text`, as plain data (None when empty). Raises YamlRefused."""
    loader = None
    try:
        loader = _StrictLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_duplicates(node, "")
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = ", ".join(part for part in (exc.context, exc.problem) if part)
        if mark is None:
            raise _file_error(f"is not valid YAML: {problem}", "a YAML mapping") from None
        line = mark.line + 1
        raise _file_error(
            f"is not valid YAML at line {line}, column {mark.column + 1}: {problem}", "a YAML mapping", line
        ) from None
    except yaml.reader.ReaderError as exc:  # raised before any mark exists, with a character offset instead
        line = text.count("\n", 0, exc.position) + 1
        raise _file_error(f"is not valid YAML at line {line}: {exc.reason}", "a YAML mapping", line) from None
    finally:
        if loader is not None:
            loader.dispose()


def _file_error(problem: str, allowed: str, line: int | None = None) -> YamlRefused:
    return YamlRefused("(file)", problem, allowed, line)


def _refuse_duplicates(node: yaml.Node, path: str) -> None:
    """PyYAML keeps the last of two equal keys without a word; refuse instead, naming the key and both lines."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.tag == "tag:yaml.org,2002:merge":
                    line = key_node.start_mark.line + 1
                    raise YamlRefused(_join(path, "<<"), f"is a YAML merge key (line {line})", "plain keys", line)
                name, line = key_node.value, key_node.start_mark.line + 1
                if name in seen:
                    raise YamlRefused(
                        _join(path, name), f"appears twice (lines {seen[name]} and {line})", "each key once", line
                    )
                seen[name] = line
                _refuse_duplicates(value_node, _join(path, name))
            else:
                _refuse_duplicates(value_node, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicates(item, path)


def _join(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name
