"""applications/chat in headless Chromium: the repository's own page, served by the
app's WebServer on a free port, talking to its gateway (whose port the page learns
from /config.js). Saves docs/images/chat.png for docs/chat.md."""
import os

import pytest

from conftest import REPO
from demo_support import running_demo
from test_websocket_browser import browser  # noqa: F401  (the Chromium fixture)

# The page as docs/ shows it, written there with GEVENTMAN_SCREENSHOTS=1 (each run draws
# it a little differently: a plain test run takes it in memory and leaves the checkout
# clean).
SCREENSHOT = (os.path.join(REPO, "docs", "images", "chat.png")
              if os.environ.get("GEVENTMAN_SCREENSHOTS") else None)
TIMEOUT = 10000  # ms, for every wait in the page


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    with running_demo(tmp_path_factory, "chat", "CHAT") as demo:
        yield demo


def open_page(browser, demo, name, room="1", **options):  # noqa: F811
    page = browser.new_page(**options)
    page.goto(demo.url + "?room_id=" + room)
    page.wait_for_function("document.getElementById('status').textContent === 'connected'",
                           timeout=TIMEOUT)
    page.fill("#name", name)
    page.click("#enter")
    page.wait_for_selector("#chat:not([hidden])", timeout=TIMEOUT)
    return page


def users(page):
    return page.eval_on_selector_all("#users li", "items => items.map(i => i.textContent)")


def texts(page):
    return page.eval_on_selector_all("#messages .message .text",
                                     "items => items.map(i => i.textContent)")


def wait_text(page, text):
    page.wait_for_function("(t) => [...document.querySelectorAll('#messages .text')]"
                           ".some(i => i.textContent === t)", arg=text, timeout=TIMEOUT)


def wait_users(page, names):
    page.wait_for_function("(names) => JSON.stringify([...document.querySelectorAll("
                           "'#users li')].map(i => i.textContent).sort()) === "
                           "JSON.stringify(names)", arg=sorted(names), timeout=TIMEOUT)


def say(page, text, to="everyone"):
    page.select_option("#to", label=to)
    page.fill("#content", text)
    page.click("#send")


def test_rooms_public_and_private_messages_and_logout(chat, browser):  # noqa: F811
    alice = open_page(browser, chat, "alice")
    bob = open_page(browser, chat, "bob")
    dave = open_page(browser, chat, "dave")
    carol = open_page(browser, chat, "carol", room="2")
    for page in (alice, bob, dave):
        wait_users(page, ["alice", "bob", "dave"])
    assert users(carol) == ["carol"]

    say(alice, "hello everyone")
    for page in (alice, bob, dave):
        wait_text(page, "hello everyone")
    say(bob, "psst, alice", to="alice")
    for page in (alice, bob):
        wait_text(page, "psst, alice")
    assert alice.inner_text("#messages .private .meta").startswith("bob to you (private)")
    assert bob.inner_text("#messages .private .meta").startswith("you to alice (private)")
    say(bob, "after the secret")   # dave gets this after the private one would have come
    wait_text(dave, "after the secret")
    assert texts(dave) == ["hello everyone", "after the secret"]
    say(carol, "anyone in room 2?")
    wait_text(carol, "anyone in room 2?")
    assert texts(carol) == ["anyone in room 2?"]

    bob.close()
    for page in (alice, dave):
        wait_users(page, ["alice", "dave"])
        page.wait_for_function("[...document.querySelectorAll('#messages .system')]"
                               ".some(i => i.textContent.startsWith('bob left'))",
                               timeout=TIMEOUT)
    assert users(carol) == ["carol"]
    say(dave, "bye bob")
    wait_text(alice, "bye bob")
    alice.set_viewport_size({"width": 900, "height": 520})
    assert alice.screenshot(path=SCREENSHOT).startswith(b"\x89PNG")
    assert "Traceback" not in chat.project.log()


def test_html_in_names_and_messages_shows_as_text(chat, browser):  # noqa: F811
    name = "<b>x</b><script>pwned=1</script>"   # 32 characters: the longest name
    page = open_page(browser, chat, name, room="html")
    wait_users(page, [name])
    say(page, "<img src=x onerror=window.pwned=2>")
    wait_text(page, "<img src=x onerror=window.pwned=2>")
    assert page.evaluate("window.pwned") is None
    assert page.query_selector("#messages img") is None and page.query_selector("#users b") is None


def test_phone_width(chat, browser):  # noqa: F811
    page = open_page(browser, chat, "phone", room="small",
                     viewport={"width": 360, "height": 640}, is_mobile=True, has_touch=True)
    say(page, "from a phone " * 20)
    wait_text(page, "from a phone " * 20)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    box = page.query_selector("#send").bounding_box()
    assert box["x"] + box["width"] <= 360 and box["y"] + box["height"] <= 640


def test_idle_page_stays_and_a_lost_server_is_reconnected(tmp_path_factory, browser):  # noqa: F811
    env = {"CHAT_PING_INTERVAL": 0.5}   # drops a client silent for 1-1.5 s
    with running_demo(tmp_path_factory, "chat", "CHAT", env) as chat:
        page = open_page(browser, chat, "idle", room="hb")
        page.wait_for_function("window.chatState.pings >= 4", timeout=TIMEOUT)
        assert page.inner_text("#status") == "connected"
        say(page, "still here")
        wait_text(page, "still here")

        chat.project.stop()
        page.wait_for_function("document.getElementById('status').textContent !== "
                               "'connected'", timeout=TIMEOUT)
        chat.start()
        page.wait_for_function("document.getElementById('status').textContent === "
                               "'connected'", timeout=TIMEOUT)
        page.wait_for_function("document.querySelectorAll('#messages .system').length >= 2",
                               timeout=TIMEOUT)   # logged in again by itself
        wait_users(page, ["idle"])
        say(page, "back again")
        wait_text(page, "back again")
