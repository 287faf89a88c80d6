"""GraphiQL as a person uses it, in headless Chromium (Debian's chromium and chromedriver)
with every host but 127.0.0.1 unresolvable, as on a machine with no internet: the page
loads from the gateway alone, a query runs and shows its result, and a subscription shows
a live `orderCreated` event the test causes (relay and RabbitMQ in between). The REST
docs page, `/docs`, renders every route the same way."""
import json
import os
import time
import urllib.parse
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from hub import ROOT, drop_database, free_port, http_ok, start, stop_all, wait_for

ASSETS = ROOT / "web" / "graphiql" / "dist"


@pytest.fixture
def hub():
    suffix = f"{os.getpid()}_{time.time_ns()}"
    database = f"hub_graphiql_{suffix}"
    exchange = f"test.graphiql.orders.{suffix}"
    processes = []
    port, admin = free_port(), free_port()
    start(processes, ["gateway"], database, GATEWAY_ADDR=f"127.0.0.1:{port}",
          GRAPHIQL_ASSETS_DIR=str(ASSETS), ORDERS_EXCHANGE=exchange)
    start(processes, ["workers", "relay", "--exchange", exchange, "--queue", f"{exchange}.queue",
                      "--admin-addr", f"127.0.0.1:{admin}"], database)
    wait_for("the gateway", lambda: http_ok(f"http://127.0.0.1:{port}/healthz"))
    wait_for("the relay", lambda: http_ok(f"http://127.0.0.1:{admin}/healthz"))
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield browser, port
    browser.quit()
    stop_all(processes)
    drop_database(database)


def open_with(browser, port, query):
    browser.get(f"http://127.0.0.1:{port}/graphql?" + urllib.parse.urlencode({"query": query}))
    wait = WebDriverWait(browser, 30)
    button = wait.until(expected_conditions.element_to_be_clickable(
        (By.CSS_SELECTOR, ".graphiql-execute-button")))
    button.click()
    return wait


def result_text(browser):
    return browser.find_element(By.CSS_SELECTOR, ".result-window").text


def test_a_query_runs_and_a_subscription_shows_a_live_order(hub):
    browser, port = hub
    wait = open_with(browser, port, "{ customers(first: 1) { totalCount } }")
    wait.until(lambda _: "totalCount" in result_text(browser))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=b'{"query": "{ customers { totalCount } }"}',
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        total = json.loads(response.read())["data"]["customers"]["totalCount"]
    assert f'"totalCount": {total}' in result_text(browser), result_text(browser)
    # Nothing came from anywhere but the gateway.
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors

    wait = open_with(browser, port, "subscription { orderCreated { productName quantity } }")
    time.sleep(1)  # the subscription is open once the socket is acknowledged
    order = {"customer_id": 2, "product_name": "Seen in GraphiQL", "quantity": 3, "price": 4,
             "status": "pending"}
    deadline = time.time() + 30
    while time.time() < deadline and "Seen in GraphiQL" not in result_text(browser):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/orders", data=json.dumps(order).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 201
        time.sleep(2)
    assert "Seen in GraphiQL" in result_text(browser), result_text(browser)


def test_the_api_docs_page_renders_every_rest_route_offline(hub):
    """`/docs`: Swagger UI, served by the gateway like GraphiQL, over `/openapi.json`."""
    browser, port = hub
    browser.get(f"http://127.0.0.1:{port}/docs")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda _: len(browser.find_elements(By.CSS_SELECTOR, ".opblock")) >= 16)
    # Swagger UI breaks long paths with zero-width spaces.
    paths = {element.text.replace("\u200b", "")
             for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    for path in ("/api/v1/orders", "/buy", "/search", "/api/customers/{customer_id}"):
        assert path in paths, paths
    # One operation opened, as a reader would: its answers, with the purchases API's own
    # error shape.
    browser.find_element(By.CSS_SELECTOR, "#operations-purchases-buy .opblock-summary").click()
    operation = browser.find_element(By.ID, "operations-purchases-buy")
    wait.until(lambda _: "a field is wrong" in operation.text)
    assert '"field": "string"' in operation.text, operation.text
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
