"""`iterview app` end to end in a real headless Chromium: generate a scene with tiny models, render a fusion frame,
make the download zip, upload a bad file and a photo to Lift.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them) and the `app` extra."""

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iterview.config import tiny_adm_config
from iterview.models.checkpoint import save_model, tiny_adm

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip(
        "no Chromium installed (apt-get install chromium chromium-driver): the browser test needs it",
        allow_module_level=True,
    )
pytest.importorskip("gradio", reason='the app extra is not installed (pip install -e ".[app]")')
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 180
JOB_SECONDS = 300
SIZE = 16


def tiny(in_channels: int, seed: int):
    """A 16-px random G_u (4 input channels) or G_c (10) and its config."""
    return tiny_adm(seed, image_size=SIZE, in_channels=in_channels), tiny_adm_config(SIZE, in_channels)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_page(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the app exited with {server.returncode}: {server.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the app did not answer on {url} within {STARTUP_SECONDS} s")


@pytest.fixture
def app_url(tmp_path):
    models = tmp_path / "models"
    gu, gc = save_model(*tiny(4, 1), models / "gu"), save_model(*tiny(10, 2), models / "gc")
    port = free_port()
    command = [sys.executable, "-m", "iterview.cli", "app", "--uncond", str(gu), "--cond", str(gc)]
    command += ["--port", str(port), "--output-dir", str(tmp_path / "out"), "--frames", "8", "--ssaa", "1", "--cpu"]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_page(url, server)
        yield url
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def element(driver, css: str, seconds: float = JOB_SECONDS):
    return WebDriverWait(driver, seconds).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def open_tab(driver, name: str) -> None:
    driver.find_element(By.XPATH, f"//button[@role='tab' and normalize-space()='{name}']").click()


def test_generate_and_lift_in_a_real_browser(app_url, browser, tmp_path):
    browser.get(app_url)
    element(browser, "#generate-button", 60)
    browser.find_element(By.CSS_SELECTOR, "#sampler input[value='fast']").click()
    browser.find_element(By.CSS_SELECTOR, "#generate-button").click()
    grid = element(browser, "#grid-rgb img")
    video = element(browser, "#scene-video video")
    assert "Done" in element(browser, "#generate-status").text
    assert grid.get_attribute("src") and video.get_attribute("src")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#views img")) >= 1

    open_tab(browser, "Explore")
    browser.find_element(By.ID, "explore-frame-button").click()
    element(browser, "#explore-frame img")
    open_tab(browser, "Download")
    browser.find_element(By.ID, "bundle-button").click()
    WebDriverWait(browser, JOB_SECONDS).until(lambda d: ".zip" in d.find_element(By.ID, "bundle").text)

    open_tab(browser, "Lift")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    element(browser, "#lift-photo input[type=file]", 30).send_keys(str(text))
    WebDriverWait(browser, 60).until(lambda d: "not an image" in d.find_element(By.ID, "lift-status").text)
    browser.find_element(By.CSS_SELECTOR, "#lift-photo button[aria-label='Clear']").click()
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photo)
    element(browser, "#lift-photo input[type=file]", 30).send_keys(str(photo))
    element(browser, "#lift-preview img", 60)
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "lift-status").text == "")

    screenshot = tmp_path / "app.png"
    assert browser.save_screenshot(str(screenshot))
    assert Image.open(screenshot).size[0] > 0
