"""Autobahn|Testsuite against a WSGI echo app behind WebServer (tests/autobahn/wsgi_echo:
``environ["wsgi.websocket"]``, gevent-websocket's interface), with the kosoku runner:
sections 1-7, 9 and 10 whole, and the permessage-deflate sample the websocket://
run uses. Bad input on this path must behave as on websocket://: no FAILED case.
By hand: ``python tests/autobahn/run.py --wsgi`` (every section)."""
import pytest

pytest.importorskip("kosoku")
pytest.importorskip("geventwebsocket")

from test_websocket_autobahn import FAST_DEFLATE, autobahn, check  # noqa: E402


@pytest.mark.timeout(400)
def test_wsgi_autobahn_sections_1_to_7_9_and_10(tmp_path):
    with autobahn.EchoServer(app="wsgi_echo") as port:
        results = autobahn.run_cases(port, str(tmp_path), exclude=["12.*", "13.*"],
                                     parallelism=8, timeout=360)
    check(results, 247 + 54)
    # A valid message followed by a bad frame: the echo goes out before the close, as
    # on websocket:// (the bridge reads the next frame only once the app took one).
    strict = [case for case in results if case.split(".")[0] in ("3", "4")]
    assert {results[case]["behavior"] for case in strict} == {"OK"}, strict


@pytest.mark.timeout(300)
def test_wsgi_autobahn_deflate_sample(tmp_path):
    with autobahn.EchoServer(app="wsgi_echo") as port:
        results = autobahn.run_cases(port, str(tmp_path), include=FAST_DEFLATE,
                                     parallelism=4, timeout=240)
    check(results, len(FAST_DEFLATE))
