#!/usr/bin/env python3
"""Drives the coordinator's dashboard in headless Chromium (Selenium), for
tests/dashboard.rs, which starts the coordinator and its workers.

The two talk over this process's stdin and stdout, one line each way:
  this script prints  SEEN              once every --expect worker shows healthy;
  the test answers    KILLED <name>     after killing that worker (with --kill);
  this script prints  OK                when every check passed.
Any failure exits non-zero with the reason on stderr. Every wait is bounded.
"""

import argparse
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

PATIENCE = 20.0


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def browser(chromium, chromedriver, width, height):
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--no-first-run", "--disable-extensions", "--hide-scrollbars", "--lang=en-US",
              "--force-device-scale-factor=1", f"--window-size={width},{height}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    except WebDriverException as e:
        fail(f"cannot start Chromium ({chromium}) through {chromedriver}: {e.msg}")


def statuses(d):
    """name -> status of every worker row on the page."""
    out = {}
    for row in d.find_elements(By.CSS_SELECTOR, "#workers-body tr[data-name]"):
        try:
            out[row.get_attribute("data-name")] = row.find_element(By.CSS_SELECTOR, ".badge.status").text
        except StaleElementReferenceException:
            pass  # re-rendered under us: the next poll reads it
    return out


def wait(d, what, cond, timeout=PATIENCE, poll=0.05):
    try:
        return WebDriverWait(d, timeout, poll_frequency=poll,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda _: cond())
    except Exception:
        fail(f"timed out after {timeout}s waiting for {what}; the page shows {statuses(d)}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--expect", default="", help="comma-separated worker names, all healthy")
    p.add_argument("--count", type=int, help="the fleet size the page must show, a page of rows at a time")
    p.add_argument("--filter", help="type this into the name filter")
    p.add_argument("--filtered", type=int, help="workers the filter must leave")
    p.add_argument("--kill", help="the worker the test kills after SEEN")
    p.add_argument("--token", help="type this token when the page asks")
    p.add_argument("--traffic", help="wait for this service's request rate to show")
    p.add_argument("--gap", help="a service the gaps panel must list as critical")
    p.add_argument("--screenshot", required=True)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    a = p.parse_args()
    expect = [n for n in a.expect.split(",") if n]

    d = browser(a.chromium, a.chromedriver, 1440, 960)
    try:
        d.get(a.url)
        # Gone if the page reloads: every change must arrive without one.
        d.execute_script("window.__sameDocument = true")
        if a.token:
            login = wait(d, "the token prompt", lambda: d.find_element(By.ID, "login").is_displayed() or None)
            if not login:
                fail("no token prompt")
            if d.find_elements(By.CSS_SELECTOR, "#workers-body tr[data-name]"):
                fail("workers shown before a token was given")
            d.find_element(By.ID, "token-input").send_keys(a.token)
            d.find_element(By.ID, "token-submit").click()
            wait(d, "the prompt to close", lambda: not d.find_element(By.ID, "login").is_displayed())

        if expect:
            wait(d, f"{expect} healthy", lambda: all(statuses(d).get(n) == "healthy" for n in expect))
        if a.count is not None:
            t0 = time.monotonic()
            want = f"of {a.count:,}"
            wait(d, f"the page to show {want}", lambda: d.find_element(By.ID, "range").text.endswith(want))
            print(f"{a.count} workers on the page {time.monotonic() - t0:.2f}s after it loaded", file=sys.stderr)
            rows = len(d.find_elements(By.CSS_SELECTOR, "#workers-body tr[data-name]"))
            size = int(d.find_element(By.ID, "page-size").get_attribute("value"))
            if rows != min(size, a.count):
                fail(f"{rows} rows rendered for {a.count} workers; expected one page of {size}")
        if a.filter:
            t0 = time.monotonic()
            d.find_element(By.ID, "f-text").send_keys(a.filter)
            def filtered():
                names = list(statuses(d))
                return (len(names) == a.filtered and all(a.filter in n for n in names)
                        and d.find_element(By.ID, "range").text.endswith(f"of {a.filtered:,}"))
            wait(d, f"{a.filtered} workers matching {a.filter}", filtered)
            print(f"filtered to {a.filtered} in {time.monotonic() - t0:.2f}s", file=sys.stderr)
        print("SEEN", flush=True)

        if a.kill:
            line = sys.stdin.readline().split()
            if line != ["KILLED", a.kill]:
                fail(f"expected `KILLED {a.kill}` from the test, got {line}")
            t0 = time.monotonic()
            wait(d, f"{a.kill} disconnected", lambda: statuses(d).get(a.kill) == "disconnected", timeout=2.0)
            took = time.monotonic() - t0
            print(f"{a.kill} shown disconnected {took:.3f}s after the kill, without a reload", file=sys.stderr)
            # The reason the coordinator gave, beside the status. The page may
            # draw the row again between finding it and looking inside it
            # (a later event, the last-heard refresh): look again then.
            for _ in range(10):
                try:
                    row = d.find_element(By.CSS_SELECTOR, f'#workers-body tr[data-name="{a.kill}"]')
                    has_reason = bool(row.find_elements(By.CSS_SELECTOR, ".reason"))
                    break
                except StaleElementReferenceException:
                    continue
            else:
                fail(f"the row of {a.kill} was drawn again at every look")
            if not has_reason:
                fail("a disconnected worker shows no reason")

        if a.traffic:
            def rate_shown():
                rows = d.find_elements(By.CSS_SELECTOR, f'#services-body tr[data-service="{a.traffic}"] td')
                return len(rows) > 3 and rows[3].text not in ("", "0", "—")
            wait(d, f"a request rate for {a.traffic}", rate_shown)

        if a.gap:
            wait(d, f"a critical gap for {a.gap}",
                 lambda: d.find_elements(By.CSS_SELECTOR, f'#gaps .gap.critical[data-service="{a.gap}"]'))
        if a.token:
            urls = [d.current_url] + d.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)")
            if any(a.token in u for u in urls):
                fail("the token is in a URL")
        if d.execute_script("return window.__sameDocument") is not True:
            fail("the page reloaded")
        # The picture is of the page, not of the window's empty rest.
        height = d.execute_script("return document.documentElement.scrollHeight")
        d.set_window_size(1440, max(600, min(int(height) + 8, 1400)))
        # One frame for the last render, then the picture.
        d.execute_script("return new Promise(r => requestAnimationFrame(() => r()))")
        d.save_screenshot(a.screenshot)

        log = d.get_log("browser")
        for e in log:
            print("console:", e.get("level"), e.get("message"), file=sys.stderr)
        errors = [e for e in log if e.get("level") == "SEVERE"]
        if errors:
            fail("console errors: " + "; ".join(e.get("message", "") for e in errors))
        print("OK", flush=True)
    finally:
        d.quit()


if __name__ == "__main__":
    main()
