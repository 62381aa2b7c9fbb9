"""Access control on a real gateway: the token (header, page cookie), CORS closed by default, and the refusal
to listen beyond loopback without a token."""

import os
import re
import subprocess
import sys

import aiohttp
import pytest
from gateway_helpers import REPO, run, serving
from test_gateway_http import call, settings_for, video_offer

from emostream.config import Settings

TOKEN = "s3cret-token-for-tests"
ADMIN = "0perator-token-for-tests"


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
                "script": await call(http, "GET", f"{base}/static/main.js"),
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
        "with token": 403,  # the stream listing is an operator's, and no operator token is set
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
                script = await call(http, "GET", f"{served.url}/static/main.js")
                config = await call(http, "GET", f"{served.url}/api/config")
            return wrong, redirect, page, script, config

    wrong, (status, location, cookies), page, script, config = run(scenario())
    assert wrong[0] == 401
    assert status == 303 and location == "/?autostart=1", "the token leaves the address bar"
    (cookie,) = cookies
    assert cookie.startswith(f"emostream_token={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert page[0] == 200 and "/static/main.js" in page[2]
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
    allowed_headers = {h.strip().lower() for h in listed["preflight"][1]["Access-Control-Allow-Headers"].split(",")}
    assert listed["preflight"][0] == 204 and {"authorization", "x-stream-key"} <= allowed_headers
    assert listed["get"][1]["Access-Control-Expose-Headers"] == "Retry-After", "clients can honour a 429's back-off"
    assert not any(name.lower().startswith("access-control-") for name in listed["other origin"][1])


def test_without_tokens_other_sites_can_neither_forge_requests_nor_rebind_a_name(redis_server):
    """A gateway without tokens treats every request as an operator's: a page of another site the user
    visits must not roll back the model (a cross-site POST needs no preflight) or read the API by pointing
    a name of its own at 127.0.0.1 (DNS rebinding)."""
    job = {"epochs": 1}

    async def scenario():
        settings = settings_for(redis_server, cors_origins="https://ops.example.org")
        async with serving(settings) as served, aiohttp.ClientSession() as http:
            url, own = f"{served.url}/api/training-jobs", {"Origin": served.url}
            return {
                "forged": await call(http, "POST", url, json=job, headers={"Origin": "https://evil.example"}),
                "from a sandbox": await call(http, "POST", url, json=job, headers={"Origin": "null"}),
                "rebound": await call(http, "GET", f"{served.url}/api/streams", headers={"Host": "evil.example"}),
                "rebound post": await call(http, "POST", url, json=job, headers={**own, "Host": "evil.example"}),
                "listed origin": await call(http, "POST", url, json=job, headers={"Origin": "https://ops.example.org"}),
                "own page": await call(http, "POST", url, json=job, headers=own),
                "no origin": await call(http, "POST", url, json=job),
                "localhost": await call(http, "GET", f"{served.url}/api/streams", headers={"Host": "localhost"}),
                "read across sites": await call(http, "GET", url, headers={"Origin": "https://evil.example"}),
            }

    answers = run(scenario())
    refused = {name for name, (status, _, _) in answers.items() if status == 403}
    assert refused == {"forged", "from a sandbox", "rebound", "rebound post"}, answers
    assert "cross-site request from https://evil.example refused" in answers["forged"][2]["error"]
    assert "'evil.example' is not a loopback name; set EMOSTREAM_TOKEN" in answers["rebound"][2]["error"]
    assert answers["own page"][0] == answers["no origin"][0] == answers["listed origin"][0] == 503, (
        "past the guard: no trainer offers its data"
    )


def test_with_tokens_pages_of_the_same_site_cannot_forge_an_operators_requests(redis_server):
    """The cookie goes with every request from the same site, another port or subdomain included
    (SameSite is no defence there): a change sent by a page of another origin is refused whatever
    carries the token. With only the operator token set anyone is a camera user, so a name must be a
    loopback one, and only a configured token becomes a cookie."""

    job = {"epochs": 1}

    async def scenario():
        both = settings_for(redis_server, token=TOKEN, admin_token=ADMIN, trusted_proxies="127.0.0.1")
        async with serving(both) as served, aiohttp.ClientSession() as http:
            url, cookie = f"{served.url}/api/training-jobs", {"Cookie": f"emostream_token={ADMIN}"}
            sibling = {**cookie, "Origin": "http://127.0.0.1:3000"}
            proxied = {**cookie, "Origin": "https://emostream.example.org", "X-Forwarded-Host": "emostream.example.org"}
            with_tokens = {
                "sibling port": await call(http, "POST", url, json=job, headers=sibling),
                "sibling with bearer": await call(
                    http, "POST", url, json=job, headers={**sibling, "Authorization": f"Bearer {ADMIN}"}
                ),
                "own page": await call(http, "POST", url, json=job, headers={**cookie, "Origin": served.url}),
                "through its proxy": await call(http, "POST", url, json=job, headers=proxied),
                "proxy rewriting Host": await call(
                    http, "POST", url, json=job, headers={**cookie, "Origin": "https://emostream.example.org"}
                ),
                "script": await call(http, "POST", url, json=job, headers={"Authorization": f"Bearer {ADMIN}"}),
            }
        async with serving(settings_for(redis_server, admin_token=ADMIN)) as served, aiohttp.ClientSession() as http:
            operator_only = {
                "rebound": await call(http, "GET", f"{served.url}/api/config", headers={"Host": "evil.example"}),
                "any token as cookie": await call(http, "GET", f"{served.url}/?token=garbage", allow_redirects=False),
                "forged offer": await call(
                    http, "POST", f"{served.url}/api/offer", json={}, headers={"Origin": "https://evil.example"}
                ),
                "host forwarded by anyone": await call(
                    http,
                    "POST",
                    f"{served.url}/api/offer",
                    json={},
                    headers={"Origin": "https://evil.example", "X-Forwarded-Host": "evil.example"},
                ),
                "own config": await call(http, "GET", f"{served.url}/api/config"),
            }
        return with_tokens, operator_only

    with_tokens, operator_only = run(scenario())
    assert {name: status for name, (status, _, _) in with_tokens.items()} == {
        "sibling port": 403,
        "sibling with bearer": 403,
        "own page": 503,  # past the guards: no trainer offers its data
        "through its proxy": 503,
        "proxy rewriting Host": 403,
        "script": 503,
    }, with_tokens
    assert "cross-site request from http://127.0.0.1:3000 refused" in with_tokens["sibling port"][2]["error"]
    assert "proxy_set_header Host $http_host" in with_tokens["proxy rewriting Host"][2]["error"], "says what to fix"
    assert {name: status for name, (status, _, _) in operator_only.items()} == {
        "rebound": 403,
        "any token as cookie": 401,
        "forged offer": 403,
        "host forwarded by anyone": 403,
        "own config": 200,
    }, operator_only


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
    # one IPv6 host holds a whole /64: its public addresses share one client's limits
    assert run(offers_from(behind, ["2a00:1450:1::1", "2a00:1450:1::2", "2a00:1450:2::1"])) == [400, 429, 400]
    assert run(offers_from(behind, ["fd00::1", "fd00::2"])) == [400, 400], "a private network's hosts are each one"
    assert "Secure" in run(cookie(settings_for(redis_server, token=TOKEN, trusted_proxies="127.0.0.1")))
    assert "Secure" not in run(cookie(settings_for(redis_server, token=TOKEN)))
    with pytest.raises(ValueError, match=r"EMOSTREAM_TRUSTED_PROXIES: 'proxy\.local' is not an address"):
        Settings.from_env({"EMOSTREAM_TRUSTED_PROXIES": "10.0.0.0/8, proxy.local"})


def test_camera_users_reach_their_own_streams_and_operators_everything(redis_server):
    async def scenario():
        settings = settings_for(redis_server, token=TOKEN, admin_token=ADMIN, feedback=1)
        camera, operator = {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"Bearer {ADMIN}"}
        async with serving(settings) as served, aiohttp.ClientSession() as http:
            base = served.url

            async def as_(who: dict, method: str, path: str, **kwargs) -> int:
                return (await call(http, method, f"{base}{path}", headers=who, **kwargs))[0]

            rights = {
                who: {
                    "config": (await call(http, "GET", f"{base}/api/config", headers=headers))[2]["operator"],
                    "models": await as_(headers, "GET", "/api/models"),
                    "promote": await as_(headers, "POST", "/api/models/nope/promote", json={}),
                    "rollback": await as_(headers, "POST", "/api/models/rollback"),
                    "jobs": await as_(headers, "GET", "/api/training-jobs"),
                    "retrain": await as_(headers, "POST", "/api/training-jobs", json={"epochs": 1}),
                    "streams": await as_(headers, "GET", "/api/streams"),
                    "card": await as_(headers, "GET", "/api/models/live/card"),
                }
                for who, headers in (("camera", camera), ("operator", operator))
            }
            streams = []
            for _ in range(2):
                offer = {"sdp": await video_offer(), "type": "offer"}
                status, _, answer = await call(http, "POST", f"{base}/api/offer", json=offer, headers=camera)
                assert status == 200, answer
                streams.append(answer)
            mine, theirs = streams
            correction = {"seq": 0, "box": [0, 0, 10, 10], "label": "sad", "predicted": "happy", "model_version": "v"}
            feedback = {
                "no key": await as_(camera, "POST", "/api/feedback", json={**correction, "stream": mine["stream"]}),
                "their key": await as_(
                    {**camera, "X-Stream-Key": theirs["key"]},
                    "POST",
                    "/api/feedback",
                    json={**correction, "stream": mine["stream"]},
                ),
            }
            url = f"/api/streams/{mine['stream']}"
            deletes = {
                "no key": await as_(camera, "DELETE", url),
                "their key": await as_({**camera, "X-Stream-Key": theirs["key"]}, "DELETE", url),
                "own key": await as_({**camera, "X-Stream-Key": mine["key"]}, "DELETE", url),
                "operator, no key": await as_(operator, "DELETE", f"/api/streams/{theirs['stream']}"),
            }
            return rights, streams, feedback, deletes, served.hub.id, list(served.hub.sessions)

    rights, streams, feedback, deletes, gateway, left = run(scenario())
    assert rights["camera"] == {
        "config": False,
        "models": 403,
        "promote": 403,
        "rollback": 403,
        "jobs": 403,
        "retrain": 403,
        "streams": 403,
        "card": 200,
    }
    assert rights["operator"]["config"] is True
    assert rights["operator"]["models"] == rights["operator"]["streams"] == rights["operator"]["jobs"] == 200
    assert rights["operator"]["promote"] == 404 and rights["operator"]["retrain"] == 503  # allowed, then judged
    for answer in streams:  # unguessable ids, and a key only the offer's answer carries
        assert re.fullmatch(rf"{gateway}-[0-9a-f]{{16}}", answer["stream"]) and len(answer["key"]) >= 32
    assert streams[0]["key"] != streams[1]["key"]
    assert feedback == {"no key": 403, "their key": 403}
    assert deletes == {"no key": 403, "their key": 403, "own key": 200, "operator, no key": 200}
    assert left == []
