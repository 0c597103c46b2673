"""Byte sizes as `sockact run` reads them (8190, 512K, 100M, 1G) and as the generator writes them back.

One parser for both sides: `sockact generate` validates a size with it and renders `canonical()`, which
`sockact run` reads back to the same number of bytes.
"""

from __future__ import annotations

SUFFIXES = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}  # powers of 1024, as systemd's sizes
_LARGEST_FIRST = ("G", "M", "K")


def parse(text: str) -> int:
    """Bytes: a whole number with an optional K, M or G suffix (either case); ValueError otherwise."""
    number, suffix = text[:-1], text[-1:].upper()
    if suffix not in SUFFIXES or suffix == "":
        number, suffix = text, ""
    if not number.isascii() or not number.isdigit():
        # str.isdigit() alone accepts '²' and other digits int() refuses: isascii() keeps to 0-9.
        raise ValueError(f"{text!r} is not a size in bytes, e.g. 1048576, 512K, 100M or 1G")
    return int(number) * SUFFIXES[suffix]


def canonical(size: int) -> str:
    """The shortest exact text of `size` bytes: 1073741824 -> "1G", 16384 -> "16K", 8190 -> "8190"."""
    for suffix in _LARGEST_FIRST:
        if size and size % SUFFIXES[suffix] == 0:
            return f"{size // SUFFIXES[suffix]}{suffix}"
    return str(size)
