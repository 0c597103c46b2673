"""uvicorn's own HTTP protocol tests (uvicorn 0.55.0, fetched from PyPI) run against sockact's ASGI protocol."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import peers
from uvicorn_expected import EXPECTED_FAILURES

HERE = Path(__file__).parent


def outcomes(junit: Path) -> dict[str, str]:
    """Test name -> passed / failed / skipped, from pytest's JUnit XML."""
    result: dict[str, str] = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            result[case.attrib["name"]] = "failed"
        elif "skipped" in kinds:
            result[case.attrib["name"]] = "skipped"
        else:
            result[case.attrib["name"]] = "passed"
    return result


def test_uvicorn_http_protocol_suite(tmp_path: Path) -> None:
    root = peers.fetch(peers.UVICORN)
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\n")  # not sockact's pytest configuration, not uvicorn's
    junit = tmp_path / "uvicorn.xml"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(HERE)])}
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(root / "tests" / "protocols" / "test_http.py"),
        "-c",
        str(ini),
        "--rootdir",
        str(root),
        "-p",
        "uvicorn_peer_plugin",
        "-p",
        "no:cacheprovider",
        "-q",
        "--tb=line",
        "-rN",
        f"--junitxml={junit}",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert junit.exists(), f"uvicorn's suite did not run:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    results = outcomes(junit)
    counts = Counter(results.values())
    print(
        f"\nuvicorn 0.55.0 test_http.py with sockact's protocol: {counts['passed']} of {len(results)} passed, "
        f"{counts['failed']} failed, {counts['skipped']} skipped"
    )
    by_category = Counter(category for category, _ in EXPECTED_FAILURES.values())
    print("classified: " + ", ".join(f"{count} {category}" for category, count in sorted(by_category.items())))
    assert len(results) > 80, f"too few tests collected ({len(results)}): did the plugin bind the protocol?"
    not_passing = {name for name, outcome in results.items() if outcome != "passed"}
    listed = set(EXPECTED_FAILURES)
    new = sorted(not_passing - listed)
    fixed = sorted(listed - not_passing)
    details = "\n".join(line for line in done.stdout.splitlines() if "test_http.py:" in line)
    assert not new, f"uvicorn tests failing and not classified in uvicorn_expected.py: {new}\n{details}"
    assert not fixed, f"classified as failing but now passing (remove them from uvicorn_expected.py): {fixed}"
