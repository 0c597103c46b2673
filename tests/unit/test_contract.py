"""sockact.contract: what one layer writes, another reads back the same; and it depends on nothing of sockact."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from sockact import contract
from sockact.generator import spec
from sockact.generator.render import render

REPO = Path(__file__).resolve().parents[2]


def test_status_lines_round_trip() -> None:
    line = contract.format_serving(
        12,
        1,
        3.04,
        ready_since="2026-12-03 14:00:00",
        replaced=2,
        stuck=contract.format_threads_stuck(3, 10, 45.4),
        leaving="/ready answers 503",
    )
    assert line == (
        "leaving: /ready answers 503; serving: 12 requests, 1 in flight, 3.0 req/s; 3 of 10 threads "
        "stuck for 45 s; ready since 2026-12-03 14:00:00; serving process replaced 2 times"
    )
    assert contract.parse_status(line) == contract.Counters(12, 1, 3.0, 3, 10, 45.0, None, 2)
    blocked = contract.format_serving(5, 2, 0.0, ready_since="x", stuck=contract.format_loop_blocked(12.2))
    assert contract.parse_status(blocked).not_serving == "event loop blocked for 12 s"
    assert contract.parse_status(contract.format_draining(4, "recycling")) == contract.Counters(None, 4, None)
    waiting = contract.format_cannot_start("cannot import m: ImportError: x; y", 2.5, 3)
    assert waiting == "cannot start: cannot import m: ImportError: x; y; retrying in 2.5 s (attempt 3)"
    assert contract.app_reason(waiting) == "cannot import m: ImportError: x; y"
    assert contract.app_reason(contract.CANNOT_START + waiting) == "cannot import m: ImportError: x; y"
    assert contract.app_reason("serving: 1 requests, 0 in flight, 0.0 req/s") is None


def test_unit_names_and_instances() -> None:
    assert [
        contract.socket_unit("web"),
        contract.template_unit("web"),
        contract.target_unit("web"),
        contract.health_socket_unit("web"),
        contract.instance_unit("web", 3),
    ] == ["web.socket", "web@.service", "web.target", "web-health.socket", "web@3.service"]
    assert contract.instance_index("web", "web@12.service") == 12
    for other in ("web@exec.service", "webby@1.service", "web@1.socket", "web@.service", "web@١.service"):
        assert contract.instance_index("web", other) is None, other


def test_every_generated_unit_starts_with_the_header() -> None:
    built = spec.build(
        unit_name="web", listen=["8000"], python_path=sys.executable, app_ref="m:app", health_listen="9000"
    )
    units = render(built)
    assert [unit.filename for unit in units] == ["web.socket", "web@.service", "web.target", "web-health.socket"]
    assert all(unit.text.startswith(contract.HEADER + " ") for unit in units)


def test_the_contract_imports_nothing_of_sockact() -> None:
    tree = ast.parse((REPO / "sockact" / "contract.py").read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name.startswith("sockact") or name == ""], imported
