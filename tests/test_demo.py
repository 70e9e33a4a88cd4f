"""The README's demo: the repository's own applications/, started as a user would,
all at once on their documented ports (none used twice).

hello answers "tom" with "hello tom" (text, port 2347); web serves a page on 8080 whose
script talks to the websocket:// greeter on 2346; chat (gateway 7272, page on 55151)
and todpole (gateway 8282, page on 8383) run on Gateway/BusinessWorker. Every page is
loaded in headless Chromium and connects.
"""
import os
import shutil
import urllib.request

import pytest

from conftest import REPO, LineClient, port_open
from test_websocket_browser import browser  # noqa: F401  (the Chromium fixture)

PORTS = (2347, 8080, 2346, 7272, 55151, 8282, 8383)
INNER_PORTS = (2300, 2301, 2400, 2401)   # the gateways' ports for business workers


@pytest.fixture
def demo(project, monkeypatch):
    busy = [port for port in PORTS + INNER_PORTS if port_open(port)]
    if busy:
        pytest.fail("the demo ports %s are taken on this machine" % busy)
    shutil.rmtree(project.path("applications"))
    shutil.copytree(os.path.join(REPO, "applications"), project.path("applications"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("GEVENTMAN_STORE_PATH", project.path("store"))  # not the shared one
    project.start(ports=PORTS)
    return project


def test_demo_apps_answer(demo, browser):  # noqa: F811
    with LineClient(2347) as client:
        assert client.ask("tom") == "hello tom"
    with urllib.request.urlopen("http://127.0.0.1:8080/time.py", timeout=10) as answer:
        assert answer.read().decode().startswith("server time:")
    page = browser.new_page()
    page.goto("http://localhost:8080/")
    page.wait_for_function("document.getElementById('answer').textContent === '(connected)'",
                           timeout=10000)
    page.click("button")
    page.wait_for_function("document.getElementById('answer').textContent === 'hello tom'",
                           timeout=10000)

    chat = browser.new_page()
    chat.goto("http://localhost:55151/")
    chat.fill("#name", "tom")
    chat.click("#enter")
    chat.wait_for_function("document.querySelector('#users li.me')?.textContent === 'tom'",
                           timeout=10000)
    pond = browser.new_page()
    pond.goto("http://localhost:8383/")
    pond.wait_for_function("window.pond.me.id !== null", timeout=10000)
    assert "Traceback" not in demo.log()
    assert demo.stop().returncode == 0
