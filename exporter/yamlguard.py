"""Checks on a YAML text before anything is built from it: nesting depth, alias expansion
(a "billion laughs" file of a few hundred bytes expands to hundreds of millions of nodes,
and rendering one in an error message takes minutes and gigabytes) and keys given twice in
one mapping (PyYAML keeps the last silently: a second ``targets:`` replaces the first).

It walks the parser's event stream, so it neither recurses nor builds anything, and names
the key path of what it refuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# A config nests a handful of levels and has no business expanding aliases into more than
# a few thousand nodes: past these, a file is refused before anything is built from it.
MAX_YAML_DEPTH = 64
MAX_ALIAS_NODES = 100_000  # nodes aliases may add, counted as if expanded


@dataclass(slots=True)
class _Frame:
    """One open mapping or sequence while ``check`` walks the event stream."""

    mapping: bool
    anchor: str | None
    path: str
    size: int = 0  # nodes inside, aliases counted expanded
    index: int = 0  # sequences: next item's index
    expect_key: bool = True  # mappings: the next node is a key
    key: str | None = None  # mappings: the key whose value comes next
    keys: set[str] = field(default_factory=set)

    def child_path(self) -> str:
        if self.mapping:
            return _join(self.path, str(self.key)) if not self.expect_key else self.path
        return f"{self.path}[{self.index}]"


def check(text: str, loader: Any) -> str | None:
    """Walk the YAML event stream (no recursion, nothing built) and say what is wrong:
    nesting deeper than ``MAX_YAML_DEPTH``, aliases expanding past ``MAX_ALIAS_NODES`` (a
    billion-laughs file), a key given twice in one mapping (a second ``targets:`` would
    silently replace the first). None when the file is fine or not YAML at all (the loader
    then reports the syntax error)."""
    stack: list[_Frame] = []
    anchors: dict[str, int] = {}
    added = 0

    def done(size: int, key: str | None) -> str | None:
        if not stack:
            return None
        parent = stack[-1]
        parent.size += size
        if not parent.mapping:
            parent.index += 1
        elif parent.expect_key:
            if key is not None and key != "<<":  # merge keys may repeat
                if key in parent.keys:
                    where = _join(parent.path, key) or key
                    return f"{where}: duplicate key"
                parent.keys.add(key)
            parent.key, parent.expect_key = key, False
        else:
            parent.expect_key = True
        return None

    def line(event: Any) -> str:
        mark = getattr(event, "start_mark", None)
        return f" (line {mark.line + 1})" if mark is not None else ""

    try:
        for event in yaml.parse(text, Loader=loader):
            where = stack[-1].child_path() if stack else ""
            problem = None
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if len(stack) >= MAX_YAML_DEPTH:
                    where = where if len(where) <= 80 else where[:77] + "..."
                    return (
                        f"{where or 'document'}: nested deeper than {MAX_YAML_DEPTH} levels"
                        f"{line(event)}; at most {MAX_YAML_DEPTH} are accepted"
                    )
                mapping = isinstance(event, yaml.MappingStartEvent)
                stack.append(_Frame(mapping, event.anchor, where))
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                frame = stack.pop()
                size = frame.size + 1
                if frame.anchor is not None:
                    anchors[frame.anchor] = size
                problem = done(size, None)
            elif isinstance(event, yaml.ScalarEvent):
                if event.anchor is not None:
                    anchors[event.anchor] = 1
                problem = done(1, event.value)
            elif isinstance(event, yaml.AliasEvent):
                size = anchors.get(event.anchor, 1)
                added += size
                if added > MAX_ALIAS_NODES:
                    return (
                        f"{where or 'document'}: aliases would expand the file by more than "
                        f"{MAX_ALIAS_NODES} nodes{line(event)}; at most that is accepted"
                    )
                problem = done(size, None)
            if problem is not None:
                return f"{problem}{line(event)}; each key may appear once in a mapping"
    except yaml.YAMLError as exc:
        # libyaml 0.2.5 (PyYAML 6.0.4's wheels) refuses deep flow nesting itself, while
        # scanning ahead of the events above: the same refusal, said the same way.
        if "maximum nesting depth" in str(exc):
            where = stack[-1].child_path() if stack else ""
            where = where if len(where) <= 80 else where[:77] + "..."
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark is not None else ""
            return (
                f"{where or 'document'}: nested deeper than {MAX_YAML_DEPTH} levels{at}; "
                f"at most {MAX_YAML_DEPTH} are accepted"
            )
        return None  # the loader reports the syntax error, where a reader looks for it
    return None
