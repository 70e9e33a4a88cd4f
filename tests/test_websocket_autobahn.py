"""Autobahn|Testsuite against the geventman echo server (tests/autobahn/echo), with
the kosoku runner: sections 1-7 and 10 whole, a few cases of 9 (limits and
performance) and of 12/13 (permessage-deflate). The full run of every section is
``python tests/autobahn/run.py`` (several minutes); its summary is in
docs/websocket.md."""
import importlib.util
import os

import pytest

pytest.importorskip("kosoku")

_spec = importlib.util.spec_from_file_location(
    "geventman_autobahn_run",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "autobahn", "run.py"))
autobahn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(autobahn)

FAST_DEFLATE = ["12.1.1", "12.1.2", "12.2.3", "12.4.5", "13.1.2", "13.3.4", "13.5.3",
                "13.7.1"]
FAST_LIMITS = ["9.1.1", "9.1.2", "9.2.1", "9.2.2", "9.3.1", "9.4.1", "9.5.1", "9.6.1",
               "9.7.1", "9.8.1"]


def check(results, expected_count):
    assert len(results) == expected_count, sorted(results)
    bad = autobahn.failures(results)
    assert not bad, "\n".join("%s %s/%s: %s" % (case, results[case]["behavior"],
                                                results[case].get("behaviorClose"),
                                                results[case].get("result")) for case in bad)


@pytest.mark.timeout(300)
def test_autobahn_sections_1_to_7_and_10(tmp_path):
    with autobahn.EchoServer() as port:
        results = autobahn.run_cases(port, str(tmp_path), exclude=autobahn.FAST_EXCLUDES,
                                     parallelism=8, timeout=240)
    check(results, 247)


@pytest.mark.timeout(300)
def test_autobahn_deflate_and_limits_sample(tmp_path):
    with autobahn.EchoServer() as port:
        results = autobahn.run_cases(port, str(tmp_path), include=FAST_DEFLATE + FAST_LIMITS,
                                     parallelism=4, timeout=240)
    check(results, len(FAST_DEFLATE) + len(FAST_LIMITS))


@pytest.mark.timeout(300)
def test_autobahn_without_deflate_reports_unimplemented(tmp_path):
    """The per-worker switch: with websocket_deflate = False nothing is negotiated."""
    with autobahn.EchoServer(deflate=False) as port:
        results = autobahn.run_cases(port, str(tmp_path), include=["12.1.1", "13.1.1"],
                                     parallelism=2, timeout=120)
    assert {case["behavior"] for case in results.values()} == {"UNIMPLEMENTED"}
