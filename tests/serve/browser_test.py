#!/usr/bin/python3
"""The web page of `hyrt serve` in a real browser: headless Chromium (Debian's chromium and
chromium-driver) driven by Selenium (python3-selenium). Starts the server with the bundled
model, types a prompt, presses Generate and waits for the picture and its parameters.

  tests/serve/browser_test.py [path/to/hyrt]      (default build/tools/hyrt)

Prints "1 passed, 0 failed" and exits 0 on success; exits 1 on a failure.
"""
import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

PROMPT = "a red circle on a blue background"


def start_server(hyrt):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.Popen([hyrt, "serve", "--port", "0"], stderr=subprocess.PIPE, text=True,
                            env=env)
    for line in proc.stderr:
        sys.stderr.write("server: " + line)
        m = re.search(r"listening on (http://\S+/)", line)
        if m:
            def drain():
                for rest in proc.stderr:
                    sys.stderr.write("server: " + rest)
            threading.Thread(target=drain, daemon=True).start()
            return proc, m.group(1)
    raise RuntimeError("hyrt serve did not start")


def main():
    hyrt = sys.argv[1] if len(sys.argv) > 1 else "build/tools/hyrt"
    proc, url = start_server(hyrt)
    profile = tempfile.mkdtemp(prefix="hyrt-chromium-")
    driver = None
    try:
        options = Options()
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
            options.add_argument(flag)
        service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(30)
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        # The sampler list is filled from /sdapi/v1/samplers when the page loads.
        wait.until(lambda d: len(Select(d.find_element(By.ID, "sampler")).options) == 12)

        prompt = driver.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys(PROMPT)
        for field, value in (("width", "64"), ("height", "64"), ("steps", "6"), ("seed", "11")):
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        Select(driver.find_element(By.ID, "sampler")).select_by_visible_text("DDIM")
        driver.find_element(By.ID, "generate").click()

        img = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "img.result")))
        caption = driver.find_element(By.CSS_SELECTOR, "figcaption").text
        src = img.get_attribute("src")
        assert src.startswith("data:image/png;base64,"), src[:40]
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
        assert PROMPT in caption, caption
        assert "Sampler: DDIM" in caption and "Seed: 11" in caption and "Size: 64x64" in caption, caption
        # The browser decoded it: a 64x64 picture on the page.
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", img) == 64)
        progress = driver.find_element(By.ID, "progress").get_attribute("value")
        assert float(progress) == 1.0, progress
        print("browser test: the page drew", repr(PROMPT), "->", caption.splitlines()[-1])
        print("1 passed, 0 failed")
        return 0
    except Exception as e:  # report, then fail the run
        print(f"browser test failed: {type(e).__name__}: {e}", file=sys.stderr)
        if driver:
            print(driver.find_element(By.TAG_NAME, "body").text, file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    finally:
        if driver:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
