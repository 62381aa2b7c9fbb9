"""Access control on a real gateway: the token (header, page cookie), CORS closed by default, and the refusal
to listen beyond loopback without a token."""

import os
import subprocess
import sys

import aiohttp
import pytest
from gateway_helpers import REPO, run, serving
from test_gateway_http import call, settings_for

from emostream.config import Settings

TOKEN = "s3cret-token-for-tests"


def test_every_route_but_health_and_metrics_needs_the_token(redis_server):
    async def scenario():
        async with serving(settings_for(redis_server, token=TOKEN)) as served, aiohttp.ClientSession() as http:
            base = served.url
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            return {
                "healthz": await call(http, "GET", f"{base}/healthz"),
                "readyz": await call(http, "GET", f"{base}/readyz"),
                "metrics": await call(http, "GET", f"{base}/metrics"),
                "page": await call(http, "GET", f"{base}/"),
                "script": await call(http, "GET", f"{base}/static/app.js"),
                "streams": await call(http, "GET", f"{base}/api/streams"),
                "offer": await call(http, "POST", f"{base}/api/offer", json={"type": "offer", "sdp": "x"}),
                "wrong token": await call(http, "GET", f"{base}/api/streams", headers={"Authorization": "Bearer no"}),
                "prefix of it": await call(
                    http, "GET", f"{base}/api/streams", headers={"Authorization": f"Bearer {TOKEN[:-1]}"}
                ),
                "with token": await call(http, "GET", f"{base}/api/streams", headers=bearer),
                "offer with token": await call(
                    http, "POST", f"{base}/api/offer", json={"type": "offer", "sdp": "x"}, headers=bearer
                ),
            }

    answers = run(scenario())
    status = {name: answer[0] for name, answer in answers.items()}
    assert status == {
        "healthz": 200,
        "readyz": 200,
        "metrics": 200,
        "page": 401,
        "script": 401,
        "streams": 401,
        "offer": 401,
        "wrong token": 401,
        "prefix of it": 401,
        "with token": 200,
        "offer with token": 400,
    }
    assert "token" in answers["streams"][2]["error"] and answers["streams"][1] == "application/json"


def test_the_page_trades_the_token_in_its_url_for_a_cookie(redis_server):
    async def scenario():
        async with serving(settings_for(redis_server, token=TOKEN)) as served:
            async with aiohttp.ClientSession() as http:
                wrong = await call(http, "GET", f"{served.url}/?token=nope", allow_redirects=False)
            jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
            async with aiohttp.ClientSession(cookie_jar=jar) as http:
                async with http.get(f"{served.url}/?token={TOKEN}&autostart=1", allow_redirects=False) as response:
                    redirect = response.status, response.headers["Location"], response.headers.getall("Set-Cookie")
                page = await call(http, "GET", f"{served.url}/?autostart=1")
                script = await call(http, "GET", f"{served.url}/static/app.js")
                config = await call(http, "GET", f"{served.url}/api/config")
            return wrong, redirect, page, script, config

    wrong, (status, location, cookies), page, script, config = run(scenario())
    assert wrong[0] == 401
    assert status == 303 and location == "/?autostart=1", "the token leaves the address bar"
    (cookie,) = cookies
    assert cookie.startswith(f"emostream_token={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert page[0] == 200 and "/static/app.js" in page[2]
    assert script[0] == 200 and config[0] == 200


def test_cors_is_closed_by_default_and_open_only_to_listed_origins(redis_server):
    origin = {"Origin": "https://ops.example.org"}
    preflight = {**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}

    async def answers(settings):
        async with serving(settings) as served, aiohttp.ClientSession() as http:
            results = {}
            for name, method, headers in [("get", "GET", origin), ("preflight", "OPTIONS", preflight)]:
                async with http.request(method, f"{served.url}/api/config", headers=headers) as response:
                    results[name] = response.status, dict(response.headers)
            other = {"Origin": "https://evil.example"}
            async with http.get(f"{served.url}/api/config", headers=other) as response:
                results["other origin"] = response.status, dict(response.headers)
            return results

    closed = run(answers(settings_for(redis_server)))
    listed = run(answers(settings_for(redis_server, cors_origins="https://ops.example.org, https://x.example")))
    for _, headers in closed.values():
        assert not any(name.lower().startswith("access-control-") for name in headers)
    assert closed["preflight"][0] == 405
    assert listed["get"][0] == 200 and listed["get"][1]["Access-Control-Allow-Origin"] == origin["Origin"]
    assert listed["preflight"][0] == 204 and "Authorization" in listed["preflight"][1]["Access-Control-Allow-Headers"]
    assert not any(name.lower().startswith("access-control-") for name in listed["other origin"][1])


def test_the_gateway_refuses_to_listen_beyond_loopback_without_a_token(redis_server):
    env = {k: v for k, v in os.environ.items() if k != "EMOSTREAM_TOKEN"} | {"REDIS_URL": redis_server.url}
    for command in (["gateway", "--host", "0.0.0.0", "--port", "0"], ["up", "--host", "0.0.0.0", "--port", "0"]):
        done = subprocess.run(
            [sys.executable, "-m", "emostream.cli", *command],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and "set EMOSTREAM_TOKEN" in done.stderr, (command, done.stderr)


def test_forwarded_headers_count_only_from_trusted_proxies(redis_server):
    """Limits use X-Forwarded-For and the cookie's Secure flag X-Forwarded-Proto, from a trusted peer only."""

    async def offers_from(settings, forwarded_for: list[str]) -> list[int]:
        async with serving(settings) as served, aiohttp.ClientSession() as http:
            return [
                (await call(http, "POST", f"{served.url}/api/offer", data=b"{", headers={"X-Forwarded-For": xff}))[0]
                for xff in forwarded_for
            ]

    async def cookie(settings) -> str:
        async with serving(settings) as served, aiohttp.ClientSession() as http:
            headers = {"X-Forwarded-Proto": "https"}
            async with http.get(f"{served.url}/?token={TOKEN}", headers=headers, allow_redirects=False) as response:
                return response.headers["Set-Cookie"]

    one_offer = {"offer_rate": 1, "offer_burst": 1}
    behind = settings_for(redis_server, trusted_proxies="127.0.0.0/8", **one_offer)
    exposed = settings_for(redis_server, **one_offer)
    # behind the proxy: two clients get an offer each; a client's own X-Forwarded-For entry is not believed
    assert run(offers_from(behind, ["203.0.113.7", "203.0.113.8", "203.0.113.8"])) == [400, 400, 429]
    assert run(offers_from(behind, ["198.51.100.1, 203.0.113.9", "198.51.100.2, 203.0.113.9"])) == [400, 429]
    # not behind a trusted proxy: the header is anyone's to write, so every offer is the peer's
    assert run(offers_from(exposed, ["203.0.113.7", "203.0.113.8"])) == [400, 429]
    assert "Secure" in run(cookie(settings_for(redis_server, token=TOKEN, trusted_proxies="127.0.0.1")))
    assert "Secure" not in run(cookie(settings_for(redis_server, token=TOKEN)))
    with pytest.raises(ValueError, match=r"EMOSTREAM_TRUSTED_PROXIES: 'proxy\.local' is not an address"):
        Settings.from_env({"EMOSTREAM_TRUSTED_PROXIES": "10.0.0.0/8, proxy.local"})
