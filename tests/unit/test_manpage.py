"""docs/sockact.1 is what sockact/manpage.py writes from the argument parsers, so no option misses it."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

import pytest
from helpers import REPO

from sockact import manpage
from sockact.cli import build_parser
from sockact.runtime.main import build_parser as runtime_parser

MAN_PAGE = REPO / "docs" / "sockact.1"
REGENERATE = "python3 -m sockact.manpage > docs/sockact.1"


def test_the_committed_man_page_is_the_generated_one() -> None:
    assert MAN_PAGE.read_text() == manpage.render(build_parser()), f"run `{REGENERATE}` in the checkout"


def test_every_command_and_option_is_on_the_page() -> None:
    text = MAN_PAGE.read_text().replace("\\-", "-")
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        assert re.search(rf"^\.SS {re.escape(name)}$", text, re.MULTILINE), name
        source = runtime_parser() if name == "run" else parser
        for action in source._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"\\fB{flag}\\fR" in text, f"{name} {flag}"


def test_a_new_option_changes_the_page() -> None:
    # What the first test relies on: an option added to the parser shows up in what the generator writes.
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.choices["status"].add_argument("--brand-new", metavar="WHEN", help="a fresh option")
    rendered = manpage.render(parser)
    assert rendered != MAN_PAGE.read_text()
    assert "\\fB\\-\\-brand\\-new\\fR \\fIWHEN\\fR\na fresh option." in rendered


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
def test_man_reads_the_page_without_a_warning() -> None:
    shown = subprocess.run(
        ["man", "--warnings", "-l", str(MAN_PAGE)],
        capture_output=True,
        text=True,
        env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0 and not shown.stderr, shown.stderr
    assert "sockact install" in shown.stdout


def test_the_generator_runs_as_a_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sockact.manpage"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out == manpage.render(build_parser())
