"""The gateway's HTTP API against bad input, on a real server and a real Redis: JSON errors, no leaks."""

import os
import re
import subprocess
import sys

import aiohttp
import pytest
from aiortc import RTCPeerConnection
from gateway_helpers import REPO, run, serving

from emostream.config import Settings
from gateway.app import create_app
from gateway.session import ice_configuration
from ingest.tracks import KEEP_S

AUDIO_OFFER = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
VIDEO_WITHOUT_ICE = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


def settings_for(redis_server, **changes) -> Settings:
    return Settings(redis_url=redis_server.url, key_prefix="test", **changes)


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs) -> tuple[int, str, object]:
    async with http.request(method, url, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, response.content_type, body


async def video_offer() -> str:
    """A real offer of one video track and a data channel, as a browser makes it."""
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="sendrecv")
    pc.createDataChannel("results")
    offer = await pc.createOffer()
    await pc.close()
    return offer.sdp


def test_bad_offers_get_400_json_errors_and_leave_no_session(redis_server):
    async def scenario():
        async with serving(settings_for(redis_server)) as served, aiohttp.ClientSession() as http:
            offer_url = f"{served.url}/api/offer"
            good = await video_offer()
            answers = {
                "not json": await call(http, "POST", offer_url, data=b"{not json"),
                "not utf-8": await call(http, "POST", offer_url, data=b"\xff\xfe{}"),
                "a list": await call(http, "POST", offer_url, json=["sdp"]),
                "no sdp": await call(http, "POST", offer_url, json={"type": "offer"}),
                "an answer": await call(http, "POST", offer_url, json={"sdp": good, "type": "answer"}),
                "sdp not text": await call(http, "POST", offer_url, json={"sdp": 42, "type": "offer"}),
                "garbage sdp": await call(http, "POST", offer_url, json={"sdp": "hello\r\nworld", "type": "offer"}),
                "audio only": await call(http, "POST", offer_url, json={"sdp": AUDIO_OFFER, "type": "offer"}),
                "no ice": await call(http, "POST", offer_url, json={"sdp": VIDEO_WITHOUT_ICE, "type": "offer"}),
            }
            streams = await call(http, "GET", f"{served.url}/api/streams")
            metrics = await call(http, "GET", f"{served.url}/metrics")
            return answers, streams, metrics, served.hub.sessions

    answers, streams, metrics, sessions = run(scenario())
    for name, (status, content_type, body) in answers.items():
        assert status == 400, (name, body)
        assert content_type == "application/json" and isinstance(body["error"], str) and body["error"], name
    assert "JSON" in answers["not json"][2]["error"]
    assert "video" in answers["audio only"][2]["error"]
    assert "offer rejected" in answers["no ice"][2]["error"]
    assert streams[0] == 200 and streams[2]["streams"] == [] and not sessions
    assert 'emostream_gateway_http_errors_total{status="400"} 9.0' in metrics[2]


def test_unknown_routes_methods_and_oversized_bodies(redis_server):
    async def scenario():
        async with serving(settings_for(redis_server)) as served, aiohttp.ClientSession() as http:
            return {
                "unknown route": await call(http, "GET", f"{served.url}/nope"),
                "unknown static": await call(http, "GET", f"{served.url}/static/nope.js"),
                "wrong method": await call(http, "GET", f"{served.url}/api/offer"),
                "unknown stream": await call(http, "DELETE", f"{served.url}/api/streams/gw-x-1"),
                "oversized": await call(http, "POST", f"{served.url}/api/offer", data=b"x" * (1 << 20)),
                "still alive": await call(http, "GET", f"{served.url}/healthz"),
            }, (await http.put(f"{served.url}/api/offer")).headers.get("Allow")

    answers, allow = run(scenario())
    assert allow == "POST", "a 405 names the methods the route takes"
    expected = {"unknown route": 404, "unknown static": 404, "wrong method": 405, "unknown stream": 404}
    expected |= {"oversized": 413, "still alive": 200}
    assert {name: status for name, (status, _, _) in answers.items()} == expected
    for name, (_, content_type, body) in answers.items():
        assert content_type == "application/json" and isinstance(body, dict), name
    assert answers["still alive"][2]["alive"] is True


async def page_modules(http, url: str, entry: str) -> dict[str, tuple]:
    """Every ES module the page loads from ``entry``, following its ``import ... from "./x.js"``, by name."""
    answers, waiting = {}, [entry]
    while waiting:
        name = waiting.pop()
        answers[name] = await call(http, "GET", f"{url}/static/{name}")
        waiting += [m for m in re.findall(r'from "\./([\w-]+\.js)"', answers[name][2]) if m not in answers]
    return answers


def test_page_config_and_health(redis_server):
    async def scenario():
        settings = settings_for(
            redis_server,
            ice_servers="stun:stun.example.org:3478, turn:turn.example.org",
            ice_username="gw",
            ice_credential="s3cret",
        )
        async with serving(settings) as served, aiohttp.ClientSession() as http:
            page = await call(http, "GET", f"{served.url}/?autostart=1")
            scripts = await page_modules(http, served.url, "main.js")
            style = await call(http, "GET", f"{served.url}/static/style.css")
            config = await call(http, "GET", f"{served.url}/api/config")
            ready = await call(http, "GET", f"{served.url}/readyz")
            redis_server.stop()
            async with http.get(f"{served.url}/readyz") as response:
                unready = response.status, response.headers.get("Retry-After"), await response.json()
            alive = await call(http, "GET", f"{served.url}/healthz")
            async with http.get(f"{served.url}/api/training-jobs") as response:  # it reads Redis
                jobs = response.status, response.headers.get("Retry-After"), await response.json()
            return page, scripts, style, config, ready, unready, alive, jobs

    page, scripts, style, config, ready, unready, alive, jobs = run(scenario())
    assert page[:2] == (200, "text/html") and '<script type="module" src="/static/main.js">' in page[2]
    assert set(scripts) == {"main.js", "state.js", "net.js", "camera.js", "faces.js", "draw.js", "admin.js"}
    assert {answer[:2] for answer in scripts.values()} == {(200, "application/javascript")}
    assert "window.emostream" in scripts["state.js"][2]
    assert style[:2] == (200, "text/css")
    assert config[2]["track_keep_s"] == KEEP_S, "the page keeps a face's card as long as its track lives"
    assert config[0] == 200 and config[2]["ice_servers"] == [
        {"urls": "stun:stun.example.org:3478"},
        {"urls": "turn:turn.example.org", "username": "gw", "credential": "s3cret"},
    ], "the page gets the TURN server's credentials (browsers refuse TURN without them)"
    assert ready[:2] == (200, "application/json") and ready[2] == {"ready": True}
    assert unready == (503, "5", {"error": "Redis unreachable; try again later"}), "its address stays in the log"
    assert alive[0] == 200, "alive even without Redis"
    assert jobs[:2] == (503, "5") and "Redis is unavailable" in jobs[2]["error"], "not a 500: try again later"


def test_gateway_command_needs_redis_url():
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    command = [sys.executable, "-m", "emostream.cli", "gateway", "--port", "0"]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "REDIS_URL is not set" in done.stderr


def test_ice_servers_are_checked_when_the_settings_are_read():
    servers = "stun:stun.example.org, turns:turn.example.org:443?transport=tcp"
    settings = Settings.from_env(
        {"EMOSTREAM_ICE_SERVERS": servers, "EMOSTREAM_ICE_USERNAME": "gw", "EMOSTREAM_ICE_CREDENTIAL": "pw"}
    )
    stun, turn = ice_configuration(settings).iceServers
    assert (stun.urls, stun.username) == ("stun:stun.example.org", None)
    assert (turn.urls, turn.username, turn.credential) == ("turns:turn.example.org:443?transport=tcp", "gw", "pw")
    for value, message in [
        ("stun.example.org:3478", "'stun.example.org:3478' is not a STUN or TURN URL"),  # no scheme
        ("stun:stun.example.org?transport=udp", "is not a STUN or TURN URL"),  # STUN has no transport
        # URLs that browsers and aiortc alike would pass over in silence
        ("stuns:stun.example.org", "pass over stuns: and TURN over DTLS"),
        ("turns:turn.example.org?transport=udp", "pass over stuns: and TURN over DTLS"),
    ]:
        with pytest.raises(ValueError, match=message):
            Settings.from_env({"EMOSTREAM_ICE_SERVERS": value})
    # workers and the trainer share the gateway's configuration, not its TURN secret: only the gateway refuses
    turn_only = Settings.from_env({"EMOSTREAM_ICE_SERVERS": "stun:stun.example.org, turn:turn.example.org"})
    with pytest.raises(ValueError, match="is a TURN server: set EMOSTREAM_ICE_SECRET, or EMOSTREAM_ICE_USERNAME and"):
        create_app(turn_only.replace(redis_url="redis://127.0.0.1:1/0"))
