"""applications/todpole in headless Chromium: two pages of the repository's own game,
served by the app's WebServer on a free port, swim in one pond. Saves
docs/images/todpole.png for docs/todpole.md."""
import os

import pytest

from conftest import REPO, wait_until
from demo_support import running_demo
from test_websocket_browser import browser  # noqa: F401  (the Chromium fixture)

# The page as docs/ shows it, written there with GEVENTMAN_SCREENSHOTS=1 (each run draws
# it a little differently: a plain test run takes it in memory and leaves the checkout
# clean).
SCREENSHOT = (os.path.join(REPO, "docs", "images", "todpole.png")
              if os.environ.get("GEVENTMAN_SCREENSHOTS") else None)
TIMEOUT = 10000  # ms, for every wait in a page


@pytest.fixture(scope="module")
def todpole(tmp_path_factory):
    with running_demo(tmp_path_factory, "todpole", "TODPOLE") as demo:
        yield demo


def open_page(browser, demo):  # noqa: F811
    page = browser.new_page(viewport={"width": 800, "height": 500})
    page.goto(demo.url)
    page.wait_for_function("window.pond && window.pond.me.id !== null", timeout=TIMEOUT)
    return page


def seen_by(page, other_id):
    """Where ``page`` shows the tadpole ``other_id`` (None if it does not)."""
    return page.evaluate("(id) => { const t = window.pond.tadpoles.get(id);"
                         " return t ? {x: t.x, y: t.y, name: t.name,"
                         " messages: t.messages.map(m => m.text)} : null; }", other_id)


def me(page):
    return page.evaluate("({id: pond.me.id, x: pond.me.x, y: pond.me.y,"
                         " momentum: pond.me.momentum})")


def test_two_tadpoles_see_each_other_swim_talk_and_leave(todpole, browser):  # noqa: F811
    swimmer, watcher = open_page(browser, todpole), open_page(browser, todpole)
    swimmer_id, watcher_id = me(swimmer)["id"], me(watcher)["id"]
    wait_until(lambda: seen_by(watcher, swimmer_id) and seen_by(swimmer, watcher_id),
               10, message="each page shows the other tadpole")

    # Swim right with the keyboard (angle 0 is to the right), then stop.
    swimmer.click("#pond")
    swimmer.keyboard.down("ArrowUp")
    wait_until(lambda: me(swimmer)["x"] > 150, 10, message="the swimmer moved")
    swimmer.keyboard.up("ArrowUp")
    wait_until(lambda: me(swimmer)["momentum"] == 0, 10, message="the swimmer stopped")
    place = me(swimmer)
    wait_until(lambda: abs(seen_by(watcher, swimmer_id)["x"] - place["x"]) < 1
               and abs(seen_by(watcher, swimmer_id)["y"] - place["y"]) < 1, 10,
               message="the watcher shows the swimmer at its new place")

    # A chat bubble, then a name.
    swimmer.click("#chat")
    swimmer.keyboard.type("hello pond")
    swimmer.keyboard.press("Enter")
    wait_until(lambda: "hello pond" in seen_by(watcher, swimmer_id)["messages"], 10,
               message="the watcher shows the bubble")
    swimmer.click("#chat")
    swimmer.keyboard.type("name: Froggy")
    swimmer.keyboard.press("Enter")
    wait_until(lambda: seen_by(watcher, swimmer_id)["name"] == "Froggy", 10,
               message="the watcher shows the new name")

    # Click to swim there: down and to the left of the middle.
    before = me(swimmer)
    swimmer.mouse.click(250, 400)
    wait_until(lambda: me(swimmer)["y"] > before["y"] + 100
               and me(swimmer)["x"] < before["x"] - 100, 10, message="swam to the click")

    watcher.evaluate("say(pond.me, 'hi Froggy')")   # a bubble on the watcher's own tadpole
    canvas_has_drawing(watcher)
    assert watcher.screenshot(path=SCREENSHOT).startswith(b"\x89PNG")

    swimmer.close()
    wait_until(lambda: seen_by(watcher, swimmer_id) is None, 10,
               message="the swimmer left the watcher's pond")
    assert "Traceback" not in todpole.project.log()


def canvas_has_drawing(page):
    """The canvas is drawn: water, specks, two tadpoles and text give many colours."""
    colours = page.evaluate("""() => {
        const c = document.getElementById('pond');
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < data.length; i += 4 * 7) {
          seen.add(data[i] << 16 | data[i + 1] << 8 | data[i + 2]);
        }
        return seen.size; }""")
    assert colours > 200, colours


def test_touch_moves_the_tadpole(todpole, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 360, "height": 640}, is_mobile=True,
                            has_touch=True)
    page.goto(todpole.url)
    page.wait_for_function("window.pond && window.pond.me.id !== null", timeout=TIMEOUT)
    start = me(page)
    page.touchscreen.tap(180, 480)     # below the middle
    wait_until(lambda: me(page)["y"] > start["y"] + 100, 10, message="swam to the touch")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
