"""A YAML emitter for manifests built as plain dicts: block style, every string double-quoted.

Kubernetes reads YAML 1.1 and 1.2 alike; a plain scalar such as `no`, `0o10`, `1e3` or `on` changes
type between them (and between parsers). Every string value is therefore written as a JSON string,
which is a valid YAML double-quoted scalar in both versions and says "string" to every reader, so a
value taken from the user can never become a number, a boolean, a comment or a new key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Union

from ..errors import UsageError

Node = Union[Mapping[str, Any], Sequence[Any], str, int, bool]

# Keys written bare: letters and digits only; anything else ('app.kubernetes.io/name') is quoted too.
_PLAIN_KEY = re.compile(r"[A-Za-z][A-Za-z0-9]*")
# What YAML allows in a stream (c-printable), minus the BOM; a lone surrogate from a non-UTF-8 argv
# or a noncharacter would make the document unreadable.
_NOT_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")
_INDENT = "  "


def dump_all(documents: Sequence[Mapping[str, Any]], header: str = "") -> str:
    """A YAML stream: the header comment lines, then each document after its own `---`."""
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + "".join("---\n" + "".join(_mapping(document, 0)) for document in documents)


def scalar(value: str | int | bool) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"no YAML form for {type(value).__name__}")
    bad = _NOT_PRINTABLE.search(value)
    if bad:
        raise UsageError(
            f"{value!r} holds the character {bad.group()!r}, which a YAML manifest cannot carry; remove it"
        )
    return json.dumps(value, ensure_ascii=False)


def _key(key: str) -> str:
    return key if _PLAIN_KEY.fullmatch(key) else scalar(key)


def _is_empty_or_scalar(value: Any) -> bool:
    return not isinstance(value, (Mapping, list, tuple)) or not value


def _inline(value: Any) -> str:
    """A scalar, or an empty mapping or sequence as `{}` / `[]`."""
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    return scalar(value)


def _mapping(node: Mapping[str, Any], depth: int) -> list[str]:
    lines: list[str] = []
    for key, value in node.items():
        head = f"{_INDENT * depth}{_key(key)}:"
        if _is_empty_or_scalar(value):
            lines.append(f"{head} {_inline(value)}\n")
        elif isinstance(value, Mapping):
            lines += [head + "\n", *_mapping(value, depth + 1)]
        else:
            lines += [head + "\n", *_sequence(value, depth + 1)]
    return lines


def _sequence(node: Sequence[Any], depth: int) -> list[str]:
    lines: list[str] = []
    for item in node:
        dash = f"{_INDENT * depth}- "
        if _is_empty_or_scalar(item):
            lines.append(f"{dash}{_inline(item)}\n")
        elif isinstance(item, Mapping):
            # "- key: value" with the item's other keys under the first one's column.
            body = _mapping(item, depth + 1)
            lines += [dash + body[0].lstrip(" "), *body[1:]]
        else:
            raise TypeError("a sequence inside a sequence has no use in a manifest")
    return lines
