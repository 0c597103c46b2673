"""scripts/check's configuration catches what it is there to catch: ruff's rules and mypy --strict, as
pyproject.toml sets them, fail on a deliberate mistake and pass the same file without it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import REPO

CONFIG = REPO / "pyproject.toml"

CLEAN = textwrap.dedent('''\
    """A module every rule accepts."""

    from __future__ import annotations

    import os
    import sys


    def where(name: str) -> str:
        return os.path.join(sys.prefix, name)
    ''')

# `json` is never used (F401); `sys` before `os` is out of order (I001).
LINT_ERRORS = textwrap.dedent('''\
    """A module with an unused import and an unsorted import block."""

    from __future__ import annotations

    import sys
    import os
    import json


    def where(name: str) -> str:
        return os.path.join(sys.prefix, name)
    ''')

# An int returned as a str (any mypy run), and a function without annotations (--strict only).
TYPE_ERRORS = textwrap.dedent('''\
    """A module with a wrong return type and an unannotated function."""

    from __future__ import annotations


    def count(name: str) -> str:
        return len(name)


    def untyped(value):
        return value
    ''')


def tool(name: str) -> list[str]:
    """The check's own tool from this venv (scripts/check installs it: pyproject's dev extra)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed in {sys.prefix}: scripts/check installs it (pip install '.[dev]')")
    return [found]


def ruff(path: Path) -> subprocess.CompletedProcess[str]:
    command = ["check", "--no-cache", "--output-format", "concise", "--config", str(CONFIG), str(path)]
    return subprocess.run([*tool("ruff"), *command], capture_output=True, text=True, timeout=60, check=False)


def mypy(path: Path) -> subprocess.CompletedProcess[str]:
    # From the repository, as scripts/check runs it; a file on the command line replaces [tool.mypy] files.
    # The cache goes next to the file: the checkout may not be writable (the unit tests run without root).
    return subprocess.run(
        [*tool("mypy"), "--config-file", str(CONFIG), "--cache-dir", str(path.parent / ".mypy_cache"), str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_ruff_fails_on_an_unused_import_and_unsorted_imports(tmp_path: Path) -> None:
    bad = tmp_path / "lint_errors.py"
    bad.write_text(LINT_ERRORS)
    result = ruff(bad)
    print(f"\nruff on a deliberate lint error: exit {result.returncode}\n{result.stdout}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "F401" in result.stdout and "`json` imported but unused" in result.stdout
    assert "I001" in result.stdout

    good = tmp_path / "clean.py"
    good.write_text(CLEAN)
    result = ruff(good)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_fails_on_a_type_error_and_an_unannotated_function(tmp_path: Path) -> None:
    bad = tmp_path / "type_errors.py"
    bad.write_text(TYPE_ERRORS)
    result = mypy(bad)
    print(f"\nmypy on a deliberate type error: exit {result.returncode}\n{result.stdout}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Incompatible return value type (got "int", expected "str")  [return-value]' in result.stdout
    assert "[no-untyped-def]" in result.stdout  # strict = true in [tool.mypy]

    good = tmp_path / "clean.py"
    good.write_text(CLEAN)
    result = mypy(good)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_unformatted_file_fails_the_format_check(tmp_path: Path) -> None:
    messy = tmp_path / "messy.py"
    messy.write_text("x = {  'a':1 }\n")
    result = subprocess.run(
        [*tool("ruff"), "format", "--check", "--config", str(CONFIG), str(messy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    print(f"\nruff format --check on an unformatted file: exit {result.returncode}\n{result.stdout}")
    assert result.returncode == 1 and "1 file would be reformatted" in result.stdout, result.stdout + result.stderr
    assert 'step "$VENV/bin/ruff" format --check' in (REPO / "scripts" / "check").read_text()
