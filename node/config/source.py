"""Read a configuration file into plain YAML data, refusing what ``yaml.safe_load`` lets by.

Three things a plain ``safe_load`` accepts silently, each of which would start a node on
a configuration other than the one the administrator wrote:

- bytes that are not UTF-8 (YAML 1.1 section 5.2 allows only Unicode encodings; the
  node reads its files as UTF-8 only);
- a key given twice in one mapping (YAML 1.1 section 3.2.1.1: keys are unique; PyYAML
  keeps the last value, so a second ``node:`` block silently replaces the first);
- a file with no document at all (empty, or comments only).

Each becomes a :class:`ConfigError` naming the file, the line and, for a duplicate,
the key path (``storage.archive: duplicate key (lines 3 and 7)``).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from node.errors import ConfigError


class StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a key repeated in any mapping, at any depth."""

    def get_single_data(self) -> object:
        node = self.get_single_node()
        if node is None:
            return None
        problem = _first_duplicate(node, [], set())
        if problem:
            raise ConfigError(None, [problem])
        return self.construct_document(node)


def _join(path: list[str]) -> str:
    out = ""
    for part in path:
        out += part if part.startswith("[") or not out else f".{part}"
    return out or "(top level)"


def _first_duplicate(node: Node, path: list[str], seen: set[int]) -> str | None:
    """The first repeated key under ``node``, as ``key.path: duplicate key (...)``."""
    if id(node) in seen:  # an alias of a node already walked (anchors may even recurse)
        return None
    seen.add(id(node))
    if isinstance(node, MappingNode):
        keys: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            name = str(key_node.value) if isinstance(key_node, ScalarNode) else "?"
            if isinstance(key_node, ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                # Compare as the loader will see them: "1" and 1 are different keys.
                resolved = (key_node.tag, str(key_node.value))
                line = key_node.start_mark.line + 1
                if resolved in keys:
                    return (
                        f"{_join([*path, name])}: duplicate key (lines {keys[resolved]} "
                        f"and {line}); remove one of them"
                    )
                keys[resolved] = line
            found = _first_duplicate(value_node, [*path, name], seen)
            if found:
                return found
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            found = _first_duplicate(item, [*path, f"[{i}]"], seen)
            if found:
                return found
    return None


def read_yaml(path: Path) -> object:
    """The YAML document of ``path``; ConfigError for anything but one UTF-8 document."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(path, [f"cannot read the file: {exc.strerror or exc}"]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            path,
            [f"line {line}: not UTF-8 (byte 0x{raw[exc.start]:02X} at offset {exc.start}); "
             "save the file as UTF-8"],
        ) from exc  # fmt: skip
    try:
        data = yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass: no objects
    except ConfigError as exc:
        raise ConfigError(path, exc.problems) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, [f"{where}not valid YAML: {problem}"]) from exc
    if data is None:
        raise ConfigError(
            path, ["(top level): the file holds no configuration (it is empty or only comments)"]
        )
    return data
