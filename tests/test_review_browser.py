"""The review page in a real browser (Selenium + Debian's chromium and chromium-driver): step the queue
with the keyboard, accept a patch, and find the decision in review.jsonl."""

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_review import _out

from samsem.errors import ConfigError
from samsem.io import read_mask, write_image, write_mask

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from samsem.server.review import web  # noqa: E402

WAIT_S = 60  # generous: the machine may be busy


@pytest.fixture
def server(tmp_path):
    try:
        osd = web.openseadragon_dir()
    except ConfigError as e:
        pytest.skip(str(e))
    (tmp_path / "out").mkdir()
    out = _out(tmp_path / "out")
    write_image(tmp_path / "a.png", (np.arange(64).reshape(8, 8) * 4).astype(np.uint8))
    write_mask(tmp_path / "model1" / "a.mask.png", np.ones((8, 8), bool))
    app = web.create_app(web.ReviewConfig(out, tmp_path, {"model1": tmp_path / "model1"}), osd)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not uv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started, "the review server did not start"
    yield out, f"http://127.0.0.1:{sock.getsockname()[1]}/"
    uv.should_exit = True
    thread.join(WAIT_S)
    sock.close()


@pytest.fixture
def browser():
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def _texts(driver, selector):
    """Texts of the elements ``selector`` selects, read in one script (the list is re-rendered)."""
    script = "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)"
    return driver.execute_script(script, selector)


def _current(driver):
    current = _texts(driver, "#queue li.current")
    return current[0].split()[1] if current else None


def _wait(driver, what, predicate):
    WebDriverWait(driver, WAIT_S).until(lambda d: predicate(d), message=what)


def test_step_with_keys_and_accept(server, browser):
    out, url = server
    browser.get(url)
    _wait(browser, "the queue", lambda d: len(_texts(d, "#queue li")) == 4)
    _wait(browser, "the first patch", lambda d: _current(d) == "#1")
    _wait(browser, "the image opened", lambda d: d.execute_script("return viewer.world.getItemCount()") == 3)
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("n")
    _wait(browser, "n steps on", lambda d: _current(d) == "#2")
    body.send_keys("n")
    _wait(browser, "n steps on again", lambda d: _current(d) == "#3")
    body.send_keys("p")
    _wait(browser, "p steps back", lambda d: _current(d) == "#2")
    browser.find_element(By.ID, "accept").click()
    _wait(browser, "accept moves on", lambda d: _current(d) == "#3")
    log = out / "review.jsonl"
    _wait(browser, "the decision logged", lambda d: log.exists() and log.read_text().strip())
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["image"], e["patch"], e["action"]) for e in entries] == [("a", 2, "accept")]
    assert [t.split()[1] for t in _texts(browser, "#queue li.done")] == ["#2"]


def test_replace_by_model1_and_layer_toggle(server, browser):
    out, url = server
    browser.get(url)
    _wait(browser, "the image opened", lambda d: d.execute_script("return viewer.world.getItemCount()") == 3)
    _wait(browser, "the first patch", lambda d: _current(d) == "#1")
    browser.find_element(By.ID, "replace-model1").click()
    log = out / "review.jsonl"
    _wait(browser, "the replacement logged", lambda d: log.exists() and log.read_text().strip())
    assert json.loads(log.read_text())["action"] == "replace:model1"
    mask = read_mask(out / "a.mask.png")
    assert mask[0:4, 4:8].all() and mask.sum() == 16
    url_of_mask_tile = "return viewer.world.getItemAt(1).source.getTileUrl(3, 0, 0)"
    _wait(browser, "the mask layer reloaded", lambda d: "v=1" in (d.execute_script(url_of_mask_tile) or ""))
    assert _current(browser) == "#1"
    browser.find_element(By.ID, "layer-mask").click()
    assert browser.execute_script("return viewer.world.getItemAt(1).getOpacity()") == 0
    assert browser.execute_script("return viewer.world.getItemAt(2).getOpacity()") == 1
