"""The escaping layer: every value written into a unit file passes exactly one function here."""

from __future__ import annotations

import re

# Characters that make systemd's command-line splitter see more or other words than we mean.
_NEEDS_QUOTES = re.compile(r"""[\s"'\\;]|^$""")


def specifiers(value: str) -> str:
    """Escape '%' so systemd does not expand unit specifiers (%i, %n, ...)."""
    return value.replace("%", "%%")


def quoted(value: str) -> str:
    """A double-quoted word for settings that unquote C-style (Environment=, ExecStart= arguments)."""
    body = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + specifiers(body) + '"'


def exec_word(value: str) -> str:
    """One argument of ExecStart=: no specifier or $VARIABLE expansion, quoted when needed."""
    value = value.replace("$", "$$")
    if _NEEDS_QUOTES.search(value):
        return quoted(value)
    return specifiers(value)


def exec_line(argv: tuple[str, ...] | list[str]) -> str:
    return " ".join(exec_word(word) for word in argv)


def path(value: str) -> str:
    """A validated absolute path (no control characters, no backslashes) for path settings."""
    return specifiers(value)


def path_word(value: str) -> str:
    """A validated path (no quotes, no backslashes) as one word of a path list (ReadWritePaths=)."""
    if re.search(r"\s", value):
        return '"' + specifiers(value) + '"'
    return specifiers(value)
