"""YAML documents that remember where each value came from, and typed access that reports it.

Every file dialect of the project (testbed topologies and fault schedules, CI suites, the
``CHAOS_BANDWIDTH`` YAML file) is read through :func:`load_yaml` and :class:`Reader`, so every
mistake is an error of the caller's chosen type with ``file:line:column``. Pure: parsing only.
Quantities with units are parsed by :mod:`chaos_hvd.units`.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterator

import yaml

from .files import NotAFile, read_regular
from .units import UnitError


class _Marked:
    """Mixin: where in the file a mapping/list started, and where each key's value starts."""

    mark: Any = None
    marks: dict


class MarkedDict(dict, _Marked):
    pass


class MarkedList(list, _Marked):
    pass


class _Loader(yaml.SafeLoader):
    pass


class _DuplicateKey(Exception):
    def __init__(self, message: str, where: str | None):
        super().__init__(message)
        self.where = where


def _construct_mapping(loader, node):
    # A key written twice is a mistake; a key that overrides one merged in with `<<` is not.
    explicit = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in explicit:
            raise _DuplicateKey(f"duplicate key {key!r}", where_of(key_node.start_mark))
        explicit.add(key)
    loader.flatten_mapping(node)
    out = MarkedDict()
    out.mark, out.marks = node.start_mark, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        out[key] = loader.construct_object(value_node, deep=True)
        out.marks[key] = value_node.start_mark
    return out


def _construct_sequence(loader, node):
    out = MarkedList(loader.construct_object(n, deep=True) for n in node.value)
    out.mark, out.marks = node.start_mark, {i: n.start_mark for i, n in enumerate(node.value)}
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)

def _kind(value) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def where_of(mark, source: str | None = None) -> str | None:
    if mark is None:
        return source
    return f"{source or mark.name}:{mark.line + 1}:{mark.column + 1}"


def load_yaml(text: str, source: str, error: type) -> Any:
    """Parse YAML into MarkedDict/MarkedList; syntax errors become `error` with the location."""
    try:
        loader = _Loader(text)
        loader.name = source
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except error:
        raise
    except _DuplicateKey as e:
        raise error(str(e), e.where) from None
    except RecursionError:
        raise error("nested too deeply", source) from None
    except TypeError as e:  # e.g. a list or mapping used as a key
        raise error(f"invalid YAML: {e}", source) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise error(f"invalid YAML: {e.problem or e.context}", where_of(mark, source)) from None
    except yaml.YAMLError as e:
        raise error(f"invalid YAML: {e}", source) from None


class Reader:
    """Typed access to a MarkedDict that reports every problem with its file location."""

    def __init__(self, data: Any, path: str, source: str, error: type):
        self.path, self.source, self.error, self.data = path, source, error, data
        if not isinstance(data, dict):
            raise error(f"{path or 'file'} must be a mapping, got {_kind(data)}", self.where())

    def where(self, key=None) -> str | None:
        marks = getattr(self.data, "marks", None) or {}
        mark = marks.get(key) if key is not None else None
        return where_of(mark or getattr(self.data, "mark", None), self.source)

    def fail(self, message: str, key=None):
        label = f"{self.path}.{key}" if self.path and key is not None else (key or self.path)
        raise self.error(f"{label}: {message}" if label else message, self.where(key))

    def check_keys(self, allowed) -> None:
        for key in self.data:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), list(allowed), n=1)
                self.fail(f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; allowed: {', '.join(allowed)}", key)

    def get(self, key, default=None):
        return self.data.get(key, default)

    def require(self, key):
        if key not in self.data:
            self.fail(f"missing required key {key!r}")
        return self.data[key]

    def parse(self, key, parser, default=None):
        if key not in self.data:
            return default
        try:
            return parser(self.data[key], key)
        except UnitError as e:
            self.fail(str(e), key)

    def child(self, key, data=None) -> "Reader":
        value = self.data[key] if data is None else data
        r = Reader.__new__(Reader)
        r.path = f"{self.path}.{key}" if self.path else str(key)
        r.source, r.error, r.data = self.source, self.error, value
        if not isinstance(value, dict):
            raise self.error(f"{r.path} must be a mapping, got {_kind(value)}", self.where(key))
        return r

    def items(self, key) -> Iterator[tuple[int, Any, str | None]]:
        """(index, item, location) for a list-valued key."""
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.fail(f"must be a list, got {_kind(value)}", key)
        marks = getattr(value, "marks", {})
        for i, item in enumerate(value):
            yield i, item, where_of(marks.get(i), self.source)

    def item(self, key: str, i: int, item) -> "Reader":
        value = self.data[key]
        r = Reader.__new__(Reader)
        r.path, r.source, r.error, r.data = f"{self.path + '.' if self.path else ''}{key}[{i}]", \
            self.source, self.error, item
        if not isinstance(item, dict):
            raise self.error(f"{r.path} must be a mapping, got {_kind(item)}",
                             where_of(getattr(value, "marks", {}).get(i), self.source))
        return r


MAX_FILE_BYTES = 1 << 20


def read_text(path: str, error: type, what: str = "file") -> str:
    """A small UTF-8 text file, or `error` saying why not (missing, not a regular file, too
    large, binary)."""
    try:
        data = read_regular(path, MAX_FILE_BYTES)
    except OSError as e:
        raise error(f"cannot read {what}: {e.strerror or e}", path) from None
    except NotAFile as e:
        raise error(f"{what} is {e}", path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} is not UTF-8 text (byte {e.start})", path) from None


def load_file(path: str, error: type, what: str = "file") -> Any:
    """:func:`read_text` then :func:`load_yaml`."""
    return load_yaml(read_text(path, error, what), path, error)
