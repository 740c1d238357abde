"""The service's page in a real browser: headless Chromium (Debian's chromium and
chromium-driver packages, which `make test` installs) driven by Selenium, against the service
on 127.0.0.1. The page loads nothing from elsewhere: the browser is told to refuse any other
host."""

import os
import shutil

import pytest
from support.service import Server, get

pytestmark = pytest.mark.e2e

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# CI must run this test: a missing browser there is a failure, not a skip.
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and DRIVER) and os.environ.get("CI") != "true",
    reason="Chromium and chromedriver are not installed (make test installs them)")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'profile'}",
                 # Only the loopback service: anything else the page asked for would fail.
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    # The system driver, given explicitly: Selenium Manager never looks for one online.
    driver = webdriver.Chrome(service=DriverService(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@needs_browser
def test_page_shows_a_users_list_similar_movies_and_errors(trained_project, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    server = Server(trained_project.copy(tmp_path / "project"), tmp_path / "serve.log")
    try:
        wait = WebDriverWait(browser, 30)
        browser.get(server.base + "/")
        wait.until(ec.text_to_be_present_in_element((By.ID, "health"), "users"))
        assert "residual network" in browser.find_element(By.ID, "health").text

        user = 1
        expected = get(server.base, f"/users/{user}/recommendations?n=10")[1]
        browser.find_element(By.ID, "user").send_keys(str(user))
        browser.find_element(By.ID, "go").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recs li")) == 10)
        titles = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#recs li a")]
        assert titles == [r["title"] for r in expected["recommendations"]]
        assert browser.find_elements(By.CSS_SELECTOR, "#history li")
        assert "predicted" in browser.find_element(By.CSS_SELECTOR, "#recs li").text

        first = browser.find_element(By.CSS_SELECTOR, "#recs li a")
        movie_id = int(first.get_attribute("data-movie-id"))
        first.click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#similar li")) == 10)
        similar = get(server.base, f"/movies/{movie_id}/similar?n=10")[1]["similar"]
        assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#similar li a")] == \
            [r["title"] for r in similar]
        assert browser.find_element(By.ID, "similar-title").text == f"Similar to {titles[0]}"

        word = titles[0].split()[0]
        browser.find_element(By.ID, "search").send_keys(word)
        browser.find_element(By.ID, "find").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results li"))
        assert titles[0] in [a.text for a in browser.find_elements(By.CSS_SELECTOR,
                                                                   "#results li a")]

        user_box = browser.find_element(By.ID, "user")
        user_box.clear()
        user_box.send_keys("999999")
        browser.find_element(By.ID, "go").click()
        error = get(server.base, "/users/999999/recommendations")[1]["error"]
        wait.until(ec.text_to_be_present_in_element((By.ID, "error"), "unknown user 999999"))
        assert browser.find_element(By.ID, "error").text == error
        browser.save_screenshot(str(tmp_path / "page.png"))
        assert (tmp_path / "page.png").stat().st_size > 10_000
        # Nothing failed to load: no request the page made went unanswered.
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
                  and "999999" not in e["message"]]
        assert not severe, severe
    finally:
        server.stop()
