"""`personagpt chat --web` in a real browser: Debian's headless Chromium driven by Selenium (`make setup-browser`
installs both). The page loads, a typed message gets a reply that streams in, the settings panel changes the
reply length, the transcript downloads as JSONL; a screenshot is kept as a test artifact."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fixtures.artifacts import ROOT
from fixtures.serve import API_KEY
from personagpt.network import free_port

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra (make setup)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("PERSONAGPT_TEST_ARTIFACTS", ROOT / ".cache" / "test-artifacts"))

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="no chromium + chromedriver on PATH (make setup-browser installs Debian's)")


@pytest.fixture
def chat_page(baseline_server, serve_artifact, tmp_path):
    port = free_port()
    log = tmp_path / "chat-web.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PERSONAGPT_API_KEY": API_KEY}
    env.pop("PYTEST_CURRENT_TEST", None)  # NiceGUI would take the page for one of its own screen tests
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "personagpt.cli", "chat", "--url", baseline_server.url,
                                 "--artifact", str(serve_artifact), "--web", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                assert r.status == 200
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"chat page did not come up:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.5)
    yield url, proc, log
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("the chat page did not stop on SIGTERM") from None


@pytest.fixture
def browser(tmp_path):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        opts.add_argument(arg)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait_for(predicate, timeout=120, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_chat_page_streams_a_reply(chat_page, browser, baseline_server):
    url, proc, log = chat_page
    browser.get(url)
    wait_for(lambda: baseline_server.model in browser.find_element(By.CSS_SELECTOR, ".chat-model").text,
             what="the model name in the header")
    policy = browser.find_element(By.CSS_SELECTOR, ".chat-policy").text
    assert "the system prompt is always kept" in policy and f"({baseline_server.max_model_len} tokens)" in policy
    max_tokens = browser.find_element(By.CSS_SELECTOR, ".chat-max-tokens input")
    max_tokens.send_keys(Keys.CONTROL, "a")
    max_tokens.send_keys("120", Keys.TAB)  # the settings panel sets the reply length
    wait_for(lambda: "max_tokens (120)" in browser.find_element(By.CSS_SELECTOR, ".chat-policy").text,
             what="max_tokens=120 applied")

    box = browser.find_element(By.CSS_SELECTOR, ".chat-input input")
    box.send_keys("hello, who are you?", Keys.ENTER)
    seen: list[str] = []

    def finished():
        live = browser.find_elements(By.CSS_SELECTOR, ".chat-streaming")
        if live and live[0].text:
            seen.append(live[0].text)  # a partial reply, while it streams
        done = browser.find_elements(By.CSS_SELECTOR, ".chat-reply:not(.chat-streaming)")
        return not live and done and done[-1].text.strip()

    reply = wait_for(finished, what="a reply")
    assert seen and len(seen[0]) <= len(reply), "no partial reply was on the page while it streamed"
    assert not browser.find_element(By.CSS_SELECTOR, ".chat-error").text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "chat-web.png"
    browser.save_screenshot(str(shot))
    print(f"\nscreenshot: {shot}", file=sys.stderr)

    browser.find_element(By.CSS_SELECTOR, ".chat-download").click()
    files = wait_for(lambda: [p for p in browser.downloads.glob("*.jsonl")], timeout=30, what="the download")
    conv = json.loads(files[0].read_text().splitlines()[0])
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
    assert conv["messages"][0]["content"] == "hello, who are you?"
    assert proc.poll() is None, log.read_text()[-2000:]
