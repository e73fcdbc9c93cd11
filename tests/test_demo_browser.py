"""The demo in a real headless browser (Debian's chromium driven by Playwright): the page loads with an episode,
Step shows the agent's thought, Play and Pause run it; the screenshot lands in docs/images/demo.png.

    apt-get install -y chromium && .venv/bin/pip install -e ".[demo,browser]"
    .venv/bin/python -m pytest -q tests/test_demo_browser.py --browser
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO_ROOT

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
SCREENSHOT = REPO_ROOT / "docs" / "images" / "demo.png"
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.browser


def steps_done(page) -> int:
    return int(re.search(r"steps done: (\d+)", page.locator("#episode").inner_text()).group(1))


def test_a_person_steps_the_agent_and_reads_its_thought(demo_url, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[browser]' (Playwright)")
    from dataset_builder.vocabulary import thought_vocabulary

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(demo_url, timeout=TIMEOUT_MS)
            expect = sync_api.expect
            expect(page.locator("#episode")).to_contain_text("steps done: 0", timeout=TIMEOUT_MS)  # loaded
            thought_box = page.locator("#agent-thought textarea")
            page.locator("#step").click()
            expect(thought_box).not_to_have_value("", timeout=TIMEOUT_MS)
            thought = thought_box.input_value()
            assert set(thought.split()) <= set(thought_vocabulary()), thought
            # The same thought in the page's text: the trace, as the person reads it.
            expect(page.locator("#trace")).to_contain_text(thought, timeout=TIMEOUT_MS)
            assert page.locator("#demonstrator-thought textarea").input_value()

            page.locator("#play").click()
            page.wait_for_function(
                "() => /steps done: ([6-9]|\\d\\d)/.test(document.querySelector('#episode').innerText)",
                timeout=TIMEOUT_MS,
            )
            page.locator("#pause").click()
            expect(page.locator("#message")).to_contain_text("Paused", timeout=TIMEOUT_MS)
            page.wait_for_timeout(1000)  # a tick already under way lands; then the count must hold
            paused_at = steps_done(page)
            page.wait_for_timeout(1000)
            assert steps_done(page) == paused_at >= 6
            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)  # docs/DEMO.md shows it
