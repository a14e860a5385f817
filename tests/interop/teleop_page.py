"""The teleop page in a real browser: headless Chromium (Debian) driven by Playwright (PyPI).

Usage: teleop_page.py URL SCREENSHOT

URL is the page's address with its token, as `reflex teleop` prints it. Checks, from the browser:
- the page without the token, and with a wrong one, is refused (401);
- with it, the page connects and shows the session and the front and wrist camera views;
- holding a gamepad shoulder button with the right stick pushed up (a scripted gamepad: headless
  Chromium has none, so a shim replaces navigator.getGamepads before the page loads) takes over
  and lifts the tool; letting go hands back;
- holding Space with F (the keyboard's takeover and tool-down keys) lowers the tool;
- the e-stop button latches the e-stop.
Keeps a screenshot of the page, and prints a JSON report as its last line.
"""

import json
import sys
import time
from urllib.parse import urlsplit, urlunsplit

from playwright.sync_api import sync_playwright

GAMEPAD_SHIM = """
(() => {
  const pad = {
    id: "reflex scripted gamepad", index: 0, connected: true, mapping: "standard",
    timestamp: 0,
    axes: [0, 0, 0, 0],
    buttons: Array.from({length: 17}, () => ({pressed: false, touched: false, value: 0})),
  };
  window.__pad = pad;
  window.__setPad = (buttons, axes) => {
    pad.buttons.forEach((b, i) => { b.pressed = !!buttons[i]; b.value = buttons[i] ? 1 : 0; });
    pad.axes = axes.slice();
    pad.timestamp = performance.now();
  };
  navigator.getGamepads = () => [pad, null, null, null];
  window.addEventListener("load", () => {
    const ev = new Event("gamepadconnected");
    ev.gamepad = pad;
    window.dispatchEvent(ev);
  });
})();
"""


def tool_z(page):
    """The tool's height the page shows (the session table's `tool (m)` row)."""
    for row in page.query_selector_all("#session tr"):
        cells = row.query_selector_all("td")
        if len(cells) == 2 and cells[0].inner_text() == "tool (m)":
            return float(cells[1].inner_text().split(",")[2])
    return None


def wait_for(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(0.05)
    return predicate()


def main():
    url, screenshot = sys.argv[1], sys.argv[2]
    parts = urlsplit(url)
    bare = urlunsplit((parts.scheme, parts.netloc, "/", "", ""))
    wrong = urlunsplit((parts.scheme, parts.netloc, "/", "token=0000", ""))
    report = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        report["without_token"] = page.goto(bare).status
        report["wrong_token"] = page.goto(wrong).status
        page.add_init_script(GAMEPAD_SHIM)
        report["with_token"] = page.goto(url).status
        page.wait_for_selector("#link.up", timeout=10000)
        wait_for(lambda: tool_z(page) is not None, 5)
        report["task"] = page.inner_text("#task")
        # No learner in this session: the page hides its section.
        report["learning_hidden"] = page.evaluate(
            "document.getElementById('learning-section').hidden")
        report["front_view_px"] = wait_for(lambda: page.evaluate(
            "document.getElementById('view-front').naturalWidth"), 5)
        report["wrist_view_px"] = wait_for(lambda: page.evaluate(
            "document.getElementById('view-wrist').naturalWidth"), 5)

        # Gamepad: RB (5) held, right stick up (axis 3 = -1: the page maps it to +z).
        z0 = tool_z(page)
        buttons = [0] * 17
        buttons[5] = 1
        page.evaluate("([b, a]) => window.__setPad(b, a)", [buttons, [0, 0, 0, -1]])
        report["pad_driving"] = bool(wait_for(
            lambda: page.inner_text("#takeover") == "YOU ARE DRIVING", 5))
        time.sleep(1.5)
        z1 = tool_z(page)
        page.evaluate("([b, a]) => window.__setPad(b, a)", [[0] * 17, [0, 0, 0, 0]])
        report["pad_released"] = bool(wait_for(
            lambda: page.inner_text("#takeover") == "policy acting", 5))
        report["pad_lift_m"] = z1 - z0

        # Keyboard: Space held (take over) with F (tool down: the gamepad left it high).
        time.sleep(0.5)
        z2 = tool_z(page)
        page.keyboard.down("Space")
        page.keyboard.down("KeyF")
        report["keys_driving"] = bool(wait_for(
            lambda: page.inner_text("#takeover") == "YOU ARE DRIVING", 5))
        time.sleep(1.0)
        z3 = tool_z(page)
        page.keyboard.up("KeyF")
        page.keyboard.up("Space")
        report["keys_lift_m"] = z3 - z2

        # The e-stop button.
        page.click("#estop")
        report["estop_latched"] = bool(wait_for(
            lambda: page.inner_text("#estop") == "E-STOP LATCHED", 5))
        page.screenshot(path=screenshot, full_page=True)
        browser.close()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
