"""The page in Chromium with a fake webcam, a real gateway process, Redis and the real worker with stubbed models."""

import json
import re
import urllib.request

import redis
from browser import BOX_COLOURED, VIDEO_STATE, chromium, open_page
from clips import make_clip, validation_faces, write_y4m
from factories import brightness_store, fer_dataset, publish_brightness, without_serving_file
from gateway_helpers import GatewayProcess, face
from processes import coturn
from rq import Queue
from stand_ins import StubbedWorker

from emostream.config import Settings
from emostream.labels import EMOTIONS
from emostream.redis_server import RedisServer
from emostream.stack import EmbeddedStack
from ingest.wire import Result
from model_store import ModelStore
from model_store.store import BUNDLED
from training.data import load_folder
from training.jobs import QUEUE, Trainer


def open_streams(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/streams", timeout=10) as response:
        return json.load(response)["streams"]


def test_autostarted_page_plays_the_labelled_video_and_collects_results(redis_server, tmp_path):
    frames, truth = make_clip(validation_faces(("happy",), per_class=1), 20, hold=20)
    box = truth[0][0].box
    clip = write_y4m(frames, tmp_path / "camera.y4m")
    answer = face(box, "happy")
    with (
        GatewayProcess(
            redis_server.url, EMOSTREAM_RESULT_MAX_AGE="30", EMOSTREAM_MODEL_STORE=str(tmp_path / "store")
        ) as gateway,
        StubbedWorker(redis_server.url, Settings(), [answer]),
        chromium(clip) as browser,
    ):
        page = open_page(browser, f"{gateway.url}/?autostart=1")
        page.wait_for_function("window.emostream.results.length >= 5")
        page.wait_for_function("() => window.emostream.cameras[0].video.currentTime > 0")
        page.wait_for_function(f"(arg) => ({BOX_COLOURED})(arg) > 0.5", arg=[0, list(box)])
        # one snapshot: a result arriving between two reads would make `last` and `results` disagree
        (camera,), results = page.evaluate(f"() => [({VIDEO_STATE})(), window.emostream.results]")
        served = open_streams(gateway.url)
        fps, latency = page.inner_text(".fps"), page.inner_text(".latency")
        panel = page.inner_text(".faces")
        page.click(".camera .toggle")  # stop
        page.wait_for_function("window.emostream.cameras[0].status === 'stopped'")
        for _ in range(100):
            if not open_streams(gateway.url):
                break
            page.wait_for_timeout(100)
        left = open_streams(gateway.url)
    leftover_keys = redis.Redis.from_url(redis_server.url).keys("emostream:results:*")

    assert camera["status"] == "connected" and camera["playing"] and camera["width"] > 0
    assert [s["stream"] for s in served] == [camera["stream"]]
    assert {r["stream"] for r in results} == {camera["stream"]}
    assert all(Result.from_json(r).to_json() == r for r in results), "results are the wire Result JSON"
    (last,) = results[-1]["faces"]
    assert last | {"track": None, "smoothed": None} == answer.__dict__ and camera["last"] == results[-1]
    # a track (a new one if the loaded machine held the video over its 0.6 s), smoothed
    assert isinstance(last["track"], int) and last["smoothed"]["label"] == "happy", "the gateway tracks and smooths"
    assert re.fullmatch(r"\d+\.\d results/s", fps) and float(fps.split()[0]) > 0
    assert re.fullmatch(r"-?\d+ ms latency", latency)
    assert "happy 90%" in panel and all(label in panel for label in answer.scores)
    assert left == [], "stopping the camera closes its stream on the gateway"
    assert gateway.process.returncode == 0, "SIGTERM stops the gateway cleanly"
    assert leftover_keys == [], "the gateway deletes its reply stream when it stops"


def test_a_face_marked_wrong_is_stored_and_a_retraining_job_is_queued_and_cancelled_from_the_page(
    redis_server, tmp_path
):
    frames, truth = make_clip(validation_faces(("happy",), per_class=1), 20, hold=20)
    clip = write_y4m(frames, tmp_path / "camera.y4m")
    store = ModelStore.open_default(tmp_path / "store")  # the bundled versions
    live, shipped = store.live_version(), store.versions()
    env = {
        "EMOSTREAM_MODEL_STORE": str(tmp_path / "store"),
        "EMOSTREAM_FEEDBACK": "1",
        "EMOSTREAM_FEEDBACK_DIR": str(tmp_path / "feedback"),
        "EMOSTREAM_DATA": str(fer_dataset(tmp_path / "fer", train_per_class=2, val_per_class=1)),
    }
    # a trainer that registers and tells what it can read, but takes no job: the page's job stays queued
    idle_trainer = Trainer([Queue(QUEUE, connection=redis.Redis.from_url(redis_server.url))])
    idle_trainer.settings = Settings.from_env(env)
    with (
        GatewayProcess(redis_server.url, **env) as gateway,
        StubbedWorker(redis_server.url, Settings(), [face(truth[0][0].box, "happy")]),
        chromium(clip) as browser,
    ):
        page = open_page(browser, f"{gateway.url}/?autostart=1")
        holds, corrections = [], []
        page.on("request", lambda r: r.url.endswith("/api/feedback/hold") and holds.append(r.post_data_json))
        page.on("request", lambda r: r.url.endswith("/api/feedback") and corrections.append(r.post_data_json))
        page.click(".face .wrong")  # the panel stops following results while the user picks
        page.select_option(".correction .right-label", "sad")
        page.click(".correction .send")
        page.wait_for_function("document.querySelector('.feedback-note').textContent !== ''")
        note = page.inner_text(".feedback-note")
        live_text = page.inner_text("#live-model")
        versions = page.locator("#versions tbody tr").count()
        no_trainer = page.inner_text("#trainer-status")
        start_disabled = page.is_disabled("#retrain-form button[type=submit]")
        idle_trainer.register_birth()
        idle_trainer.heartbeat()
        page.wait_for_function("!document.querySelector('#retrain-form button[type=submit]').disabled")
        page.fill("#retrain-form [name=epochs]", "2")
        page.check("#retrain-form [name=include_feedback]")
        page.dblclick("#retrain-form button[type=submit]")  # an impatient double click queues one job
        page.wait_for_selector(".job.queued")
        with urllib.request.urlopen(f"{gateway.url}/api/training-jobs", timeout=10) as response:
            (job,) = json.load(response)["jobs"]
        page.click(".job .cancel-job")
        page.wait_for_selector(".job.canceled")
        cancelled = page.inner_text("#retraining-notice")

    assert note == "thanks: stored as sad"
    (correction,) = corrections
    assert holds == [{"stream": correction["stream"], "seq": correction["seq"]}], "its frame held as the pick began"
    assert cancelled == f"job {job['id'][:8]} cancelled"
    assert load_folder(tmp_path / "feedback").labels.tolist() == [EMOTIONS.index("sad")], "one face, labelled sad"
    assert live in live_text and versions == len(shipped)
    assert "No trainer is running" in no_trainer and start_disabled
    assert job["spec"]["epochs"] == 2 and job["spec"]["extra_train"] == [str(tmp_path / "feedback")]


def test_the_page_reconnects_by_itself_when_the_gateway_restarts(tmp_path):
    frames, _ = make_clip(validation_faces(("happy",), per_class=1), 20, hold=20)
    clip = write_y4m(frames, tmp_path / "camera.y4m")
    with RedisServer() as server:
        settings = Settings(redis_url=server.url, model_store_root=tmp_path / "store")
        env = {"EMOSTREAM_MODEL_STORE": str(settings.model_store_root)}
        with EmbeddedStack(settings, workers=1), chromium(clip) as browser:
            first = GatewayProcess(server.url, **env).wait_ready()
            try:
                page = open_page(browser, f"{first.url}/?autostart=1")
                page.wait_for_function("window.emostream.results.length >= 5")
                before = page.evaluate("window.emostream.cameras[0].stream")
            finally:
                stopped = first.stop()
            # the status the check saw: the page moves on to "reconnecting" once its countdown ends
            waiting = page.wait_for_function(
                "(() => { const s = window.emostream.cameras[0].status; return s.includes('reconnecting in') && s; })()"
            ).json_value()
            with GatewayProcess(server.url, port=first.port, **env):
                page.wait_for_function(
                    "(before) => window.emostream.results.filter((r) => r.stream !== before).length >= 5", arg=before
                )
                (camera,) = page.evaluate(VIDEO_STATE)

    assert stopped == 0
    assert camera["status"] == "connected" and camera["stream"] != before, "a new stream on the new gateway"
    assert camera["stream"].split("-")[1] != before.split("-")[1], "answered by another gateway process"
    assert "reconnecting in" in waiting, "the page shows that it is reconnecting"


TURN_SIDES = """(c => ({
    username: c.pc.getConfiguration().iceServers[0].username,
    browser: c.pc.localDescription.sdp.includes(" typ relay "),
    gateway: c.pc.remoteDescription.sdp.includes(" typ relay "),
}))(window.emostream.cameras[0])"""


def test_both_sides_relay_through_turn_with_credentials_minted_for_each_connection(redis_server, tmp_path):
    frames, _ = make_clip(validation_faces(("happy",), per_class=1), 10, hold=10)
    clip = write_y4m(frames, tmp_path / "camera.y4m")
    connected = "window.emostream.cameras[0]?.status === 'connected'"
    with coturn(tmp_path, "turn-secret") as port:
        env = {"EMOSTREAM_ICE_SERVERS": f"turn:127.0.0.1:{port}", "EMOSTREAM_ICE_SECRET": "turn-secret"}
        with (
            GatewayProcess(redis_server.url, EMOSTREAM_MODEL_STORE=str(tmp_path / "store"), **env) as gateway,
            chromium(clip) as browser,
        ):
            page = open_page(browser, f"{gateway.url}/?autostart=1")
            page.wait_for_function(connected)
            first = page.evaluate(TURN_SIDES)
            expiry = int(first["username"].split(":")[0])
            page.click(".camera .toggle")  # stop, then start once the next credentials expire later
            page.wait_for_function(f"Date.now() / 1000 + window.emostream.clockOffset > {expiry} - 86400 + 1")
            page.click(".camera .toggle")
            page.wait_for_function(connected)
            second = page.evaluate(TURN_SIDES)
    assert first["browser"] and first["gateway"], "the browser and the gateway each gathered a relayed candidate"
    assert second["browser"] and second["gateway"]
    assert int(second["username"].split(":")[0]) > expiry, "a new connection asks for new credentials"


def test_the_page_shows_models_and_retraining_to_operators_only(redis_server, tmp_path):
    frames, _ = make_clip(validation_faces(("happy",), per_class=1), 10, hold=10)
    clip = write_y4m(frames, tmp_path / "camera.y4m")
    env = {"EMOSTREAM_MODEL_STORE": str(tmp_path / "store")}
    env |= {"EMOSTREAM_TOKEN": "cam-tok", "EMOSTREAM_ADMIN_TOKEN": "op-tok"}
    hidden, card_shown = {}, {}
    with GatewayProcess(redis_server.url, **env) as gateway, chromium(clip) as browser:
        for who, token in (("camera user", "cam-tok"), ("operator", "op-tok")):
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{gateway.url}/?token={token}")
            page.wait_for_function("window.emostream && window.emostream.ready")
            hidden[who] = page.evaluate("document.querySelector('#retraining').hidden")
            card_shown[who] = page.is_visible("#model-card")
            if who == "operator":
                rollback = page.inner_text("#rollback"), page.is_disabled("#rollback")
                created = page.locator("#versions tbody tr td:nth-child(3)").all_inner_texts()
            context.close()
    assert hidden == {"camera user": True, "operator": False}
    assert card_shown == {"camera user": True, "operator": True}, "what the labels mean is for everyone"
    shipped = json.loads((BUNDLED / "history.json").read_text())["stack"]
    assert rollback == (f"Roll back to {shipped[-2]}", False), "the shipped lineage: one click back to the parent"
    assert len(created) > 1 and created == sorted(created, reverse=True), "newest first, whatever the architecture"


def test_an_operator_may_promote_a_less_accurate_version_after_a_question_but_never_an_unservable_one(
    redis_server, tmp_path
):
    frames, _ = make_clip(validation_faces(("happy",), per_class=1), 10, hold=10)
    clip = write_y4m(frames, tmp_path / "camera.y4m")
    store = brightness_store(tmp_path / "store", accuracy=0.5)
    weaker = publish_brightness(store, 0.3)
    unservable = without_serving_file(store, publish_brightness(store, 0.9))
    unreadable = store.versions_dir / "brightness-unreadable"
    unreadable.mkdir()
    (unreadable / "manifest.json").write_text("{")  # a manifest cut short
    questions = []
    with (
        GatewayProcess(redis_server.url, EMOSTREAM_MODEL_STORE=str(tmp_path / "store")) as gateway,
        chromium(clip) as browser,
    ):  # no token configured: a loopback gateway's one user is its operator
        page = open_page(browser, gateway.url)
        page.on("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
        page.wait_for_function("window.emostream.ready && !document.querySelector('#retraining').hidden")
        unreadable_row = page.inner_text(f"tr[data-version='{unreadable.name}']")
        unreadable_buttons = page.locator(f"tr[data-version='{unreadable.name}'] button").count()
        page.focus(f"tr[data-version='{weaker}'] .promote")
        page.wait_for_timeout(5000)  # two polls of the unchanged lists
        focus_kept = page.evaluate(f"document.activeElement.closest('tr')?.dataset.version === '{weaker}'")
        page.click(f"tr[data-version='{unservable}'] .promote")
        page.wait_for_function("document.querySelector('#retraining-notice').textContent")
        refused = page.inner_text("#retraining-notice")
        page.click(f"tr[data-version='{weaker}'] .promote")
        page.wait_for_function(f"document.querySelector('#retraining-notice').textContent.includes('{weaker} is live')")
    assert f"emostream models convert {unservable}" in refused and store.live_version() == weaker
    assert "unreadable:" in unreadable_row and unreadable_buttons == 0, "no Promote for a version the store cannot read"
    assert focus_kept, "a poll that finds nothing changed leaves the focus where it was"
    (question,) = questions  # asked once, about the weaker version only
    assert question.startswith(f"{weaker} has validation accuracy 0.3000, below live") and question.endswith(
        ".\n\nPromote anyway?"
    ), question
    assert '"force"' not in question


def test_a_camera_refused_for_good_is_closed_with_the_reason_not_retried(redis_server, tmp_path):
    frames, _ = make_clip(validation_faces(("happy",), per_class=1), 10, hold=10)
    clip = write_y4m(frames, tmp_path / "camera.y4m")
    env = {"EMOSTREAM_MODEL_STORE": str(tmp_path / "store"), "EMOSTREAM_MAX_STREAMS_PER_CLIENT": "1"}
    with GatewayProcess(redis_server.url, **env) as gateway, chromium(clip) as browser:
        page = open_page(browser, f"{gateway.url}/?autostart=1")
        page.wait_for_function("window.emostream.cameras[0]?.status === 'connected'")
        page.click("#add")  # a second camera from this browser, over its limit of one stream
        page.click(".camera:nth-of-type(2) .toggle")
        page.wait_for_function("window.emostream.cameras[1].status.startsWith('refused')")
        second = page.evaluate(
            "(c => ({status: c.status, wanted: c.wanted, media: c.media}))(window.emostream.cameras[1])"
        )
        shown = page.inner_text("#notice"), page.inner_text(".camera:nth-of-type(2) .toggle")
        first = page.evaluate("window.emostream.cameras[0].status")
    assert second["status"] == "refused (429)" and not second["wanted"] and second["media"] is None
    assert "at most 1 streams open" in shown[0] and shown[1] == "Start", "the reason shown, the camera closed"
    assert first == "connected", "the first camera is untouched"


NO_RATE = "\u2013 results/s"
"""What a camera shows before its first result."""


def test_first_visit_stop_and_a_phone_sized_screen(redis_server, tmp_path):
    """The default camera is one click away; stopping clears what it showed; nothing overflows at 390 px."""
    frames, truth = make_clip(validation_faces(("happy",), per_class=1), 20, hold=20)
    clip = write_y4m(frames, tmp_path / "camera.y4m")
    env = {"EMOSTREAM_MODEL_STORE": str(tmp_path / "store")}
    with (
        GatewayProcess(redis_server.url, **env) as gateway,
        StubbedWorker(redis_server.url, Settings(), [face(truth[0][0].box, "happy")]),
        chromium(clip) as browser,
    ):
        context = browser.new_context(viewport={"width": 390, "height": 844})
        page = context.new_page()
        page.goto(gateway.url)
        page.wait_for_function("window.emostream.ready")
        first_visit = {
            "cards": page.locator(".camera").count(),
            "hint": page.inner_text("#notice"),
            "buttons": [page.get_attribute(f".camera .{b}", "aria-label") for b in ("toggle", "remove")],
            "video": page.get_attribute(".camera video", "aria-label"),
            "legend": page.locator("#legend li").all_inner_texts(),
            "wider than the screen": page.evaluate("document.documentElement.scrollWidth > window.innerWidth"),
        }
        page.click(".camera .toggle")
        page.wait_for_function("window.emostream.cameras[0].last && document.querySelector('.face')")
        labelled = {
            "hint": page.inner_text("#notice"),
            "meter": page.get_attribute(".face meter", "aria-label"),
            "feedback controls": page.locator(".face .wrong").count(),  # capture is off here
            "rate": page.inner_text(".camera .fps"),
        }
        page.click("#stop-all")
        stopped = {
            "faces": page.locator(".camera .face").count(),
            "rate": page.inner_text(".camera .fps"),
            "status": page.inner_text(".camera .status"),
            "wider than the screen": page.evaluate("document.documentElement.scrollWidth > window.innerWidth"),
        }
        context.close()
    assert first_visit == {
        "cards": 1,
        "hint": "Press Start (or Start all), then allow the camera when the browser asks.",
        "buttons": ["Start default camera", "Remove default camera"],
        "video": "default camera: returned video with labelled faces",
        "legend": [*EMOTIONS, "late result"],
        "wider than the screen": False,
    }
    assert labelled["hint"] == "" and labelled["meter"] == "face 1 angry" and labelled["rate"] != NO_RATE
    assert labelled["feedback controls"] == 0
    assert stopped == {"faces": 0, "rate": NO_RATE, "status": "stopped", "wider than the screen": False}


COUNT_CAMERAS = """
window.openedStreams = [];
const open = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (constraints) => {
  const stream = await open(constraints);
  window.openedStreams.push(stream);
  return stream;
};
"""
LIVE_TRACKS = "window.openedStreams.flatMap((s) => s.getTracks()).filter((t) => t.readyState === 'live').length"


def test_the_camera_is_opened_once_reopened_when_it_ends_and_stopped_results_show(redis_server, tmp_path):
    frames, truth = make_clip(validation_faces(("happy",), per_class=1), 20, hold=20)
    clip = write_y4m(frames, tmp_path / "camera.y4m")
    with (
        GatewayProcess(redis_server.url, EMOSTREAM_MODEL_STORE=str(tmp_path / "store")) as gateway,
        chromium(clip) as browser,
    ):
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.add_init_script(COUNT_CAMERAS)
        page.goto(gateway.url)
        page.wait_for_function("window.emostream.ready")
        page.evaluate("() => { const camera = window.emostream.cameras[0]; camera.start(); camera.start(); }")
        with StubbedWorker(redis_server.url, Settings(), [face(truth[0][0].box, "happy")]):
            page.wait_for_function("window.emostream.cameras[0].last && document.querySelector('.face')")
        page.wait_for_function("document.querySelector('.camera .fps').textContent === '0.0 results/s'")
        page.wait_for_function("!document.querySelector('.camera .face')")  # its track has ended too
        stalled = {
            "latency": page.inner_text(".camera .latency"),
            "status": page.evaluate("emostream.cameras[0].status"),
        }
        first = page.evaluate("window.emostream.cameras[0].stream")
        page.evaluate("window.emostream.cameras[0].media.getVideoTracks()[0].dispatchEvent(new Event('ended'))")
        page.wait_for_function(
            f"(c => c.stream && c.stream !== {json.dumps(first)} && c.status.startsWith('connected'))"
            "(window.emostream.cameras[0])"
        )
        reopened = {"opened": page.evaluate("window.openedStreams.length"), "live": page.evaluate(LIVE_TRACKS)}
        page.click("#stop-all")
        after_stop = page.evaluate(LIVE_TRACKS)
    assert stalled == {"latency": "\u2013 ms", "status": "connected"}, "results stopped; the connection did not"
    assert reopened == {"opened": 2, "live": 1}, "one camera for two Starts; opened again once it ended"
    assert after_stop == 0, "Stop leaves no camera running"


def test_a_refused_offer_waits_as_long_as_retry_after_asks(redis_server, tmp_path):
    frames, _ = make_clip(validation_faces(("happy",), per_class=1), 10, hold=10)
    clip = write_y4m(frames, tmp_path / "camera.y4m")
    env = {"EMOSTREAM_MODEL_STORE": str(tmp_path / "store"), "EMOSTREAM_OFFER_RATE": "2", "EMOSTREAM_OFFER_BURST": "1"}
    with GatewayProcess(redis_server.url, **env) as gateway, chromium(clip) as browser:
        page = open_page(browser, f"{gateway.url}/?autostart=1")  # the first offer takes the one token
        page.wait_for_function("window.emostream.ready && window.emostream.cameras[0].stream")
        page.click("#add")
        page.click(".camera:nth-of-type(2) .toggle")
        page.wait_for_function("window.emostream.cameras[1].status.includes('reconnecting in')")
        status = page.evaluate("window.emostream.cameras[1].status")
    assert status.startswith("error: too many offers"), status
    waits = float(re.search(r"reconnecting in ([\d.]+) s", status).group(1))
    assert waits >= 29, f"2 offers a minute: Retry-After is about 30 s, not the 0.5 s backoff ({status})"


def test_labels_drawn_by_the_browser_timeline_and_download(redis_server, tmp_path):
    """?overlay=browser: no video comes back, the page draws the boxes over its preview, charts each
    face's smoothed scores and downloads the stream's results; switching to server video reconnects."""
    frames, truth = make_clip(validation_faces(("happy",), per_class=1), 20, hold=20)
    box = truth[0][0].box
    clip = write_y4m(frames, tmp_path / "camera.y4m")
    env = {"EMOSTREAM_MODEL_STORE": str(tmp_path / "store"), "EMOSTREAM_RESULT_MAX_AGE": "30"}
    with (
        GatewayProcess(redis_server.url, **env) as gateway,
        StubbedWorker(redis_server.url, Settings(), [face(box, "happy")]),
        chromium(clip) as browser,
    ):
        page = open_page(browser, f"{gateway.url}/?overlay=browser&autostart=1")
        page.wait_for_function("window.emostream.results.length >= 5")
        page.wait_for_function(f"(arg) => ({BOX_COLOURED})(arg) > 0.5", arg=[0, list(box), "canvas"])
        drawn = page.evaluate(
            r"""() => {
                const camera = window.emostream.cameras[0];
                const timeline = document.querySelector(".face .timeline");
                // the chart's top fifth: where the line of a 0.9 score runs
                const top = timeline.getContext("2d").getImageData(0, 0, timeline.width, timeline.height / 5).data;
                const happy = window.emostream.config.colors.happy.match(/\w\w/g).map((h) => parseInt(h, 16));
                let onHappyLine = 0;
                for (let i = 0; i < top.length; i += 4) {
                    const near = happy.every((v, k) => Math.abs(top[i + k] - v) < 40);
                    if (near && top[i + 3] > 100) onHappyLine += 1;
                }
                return {
                    overlay: camera.overlay,
                    control: document.querySelector(".overlay-mode").value,
                    returned: camera.pc.getReceivers().some(
                        (r) => r.track.kind === "video" && camera.video.srcObject.getTracks().includes(r.track)
                    ),
                    preview: camera.video.srcObject === camera.media,
                    timeline: onHappyLine,
                };
            }"""
        )
        served = open_streams(gateway.url)
        page.evaluate("() => { window.firstCard = document.querySelector('.face'); }")
        seen = page.evaluate("window.emostream.results.length")
        page.wait_for_function("(seen) => window.emostream.results.length >= seen + 5", arg=seen)
        in_place = page.evaluate("document.querySelector('.face') === window.firstCard && window.firstCard.isConnected")
        with page.expect_download() as download:
            page.click(".camera .download")
        lines = [json.loads(line) for line in download.value.path().read_text().splitlines()]
        page.evaluate("window.emostream.cameras[0].overlay = 'server'")
        page.wait_for_function(
            "([camera]) => camera.video.currentTime > 0 && camera.video.srcObject !== camera.media",
            arg=[page.evaluate_handle("window.emostream.cameras[0]")],
        )
        page.wait_for_function(f"(arg) => ({BOX_COLOURED})(arg) > 0.5", arg=[0, list(box)])
        page.wait_for_function("window.emostream.cameras[0].videoStats.receivedFps > 0")
        rates = page.inner_text(".camera .video-rates")
        switched = open_streams(gateway.url)
    assert drawn == {
        "overlay": "browser",
        "control": "browser",
        "returned": False,
        "preview": True,
        "timeline": drawn["timeline"],
    }
    assert drawn["timeline"] >= 3, "the timeline charts the face's smoothed happy score near the top"
    assert in_place, "the face's card is updated in place, not rebuilt for every result"
    assert [s["return_video"] for s in served] == [False], "the gateway encodes no video back"
    assert len(lines) >= 5 and {line["stream"] for line in lines} == {served[0]["stream"]}
    assert all(Result.from_json(line).to_json() == line for line in lines), "one wire Result per line"
    assert {face["track"] for line in lines for face in line["faces"]} == {1}
    assert [s["return_video"] for s in switched] == [True], "switching to server video makes a new offer"
    assert re.fullmatch(r"video: sending \d+ fps · returned \d+ fps, \d+ dropped", rates), rates


def test_a_blocked_camera_is_explained_once_and_not_retried(redis_server, tmp_path):
    frames, _ = make_clip(validation_faces(("happy",), per_class=1), 10, hold=10)
    clip = write_y4m(frames, tmp_path / "camera.y4m")
    refuse = """navigator.mediaDevices.getUserMedia = async () => {
        window.cameraAsked = (window.cameraAsked || 0) + 1;
        throw new DOMException("Permission denied", "NotAllowedError");
    };"""
    with (
        GatewayProcess(redis_server.url, EMOSTREAM_MODEL_STORE=str(tmp_path / "store")) as gateway,
        chromium(clip) as browser,
    ):
        page = browser.new_page()
        page.add_init_script(refuse)  # as when the user has blocked the camera for this site
        page.goto(f"{gateway.url}/?autostart=1")
        page.wait_for_function(
            "window.emostream.ready && window.emostream.cameras[0].status.startsWith('camera unavailable')"
        )
        state = page.evaluate(
            "() => [window.emostream.cameras[0].status, window.emostream.cameras[0].wanted, window.cameraAsked,"
            " document.querySelector('#notice').textContent, document.querySelector('.camera .toggle').textContent]"
        )
    status, wanted, asked, notice, toggle = state
    assert status == "camera unavailable (NotAllowedError)" and not wanted and asked == 1 and toggle == "Start"
    assert "blocked the camera" in notice and "press Start" in notice
