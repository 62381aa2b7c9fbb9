// emostream page: one RTCPeerConnection per camera; the gateway answers with the labelled video
// and sends every result (the wire Result JSON) on the "results" data channel.
"use strict";

const MAX_RESULTS = 1000;
const ICE_GATHERING_TIMEOUT_MS = 5000;
const WINDOW_MS = 2000; // fps and latency are measured over this window
const RETRAINING_POLL_MS = 2000; // the model and job lists are refreshed this often
const RECONNECT_MIN_MS = 500; // a lost connection is retried after this, doubling up to RECONNECT_MAX_MS
const RECONNECT_MAX_MS = 10000;
const DISCONNECTED_GRACE_MS = 4000; // "disconnected" for this long counts as lost (it may recover by itself)

// For automation: results of every camera, newest last.
const emostream = (window.emostream = { results: [], cameras: [], clockOffset: 0, config: null, ready: false });

const $ = (selector, root = document) => root.querySelector(selector);

function notice(text, error = false) {
  $("#notice").textContent = text;
  $("#notice").classList.toggle("error", error);
}

// Same-origin requests carry the token cookie set by /?token=... (HttpOnly: scripts never see the token).
// An error carries the HTTP status and, for a 429 or 503, the seconds Retry-After asks to wait.
async function fetchJson(url, options) {
  const response = await fetch(url, { credentials: "same-origin", ...options });
  const json = (response.headers.get("Content-Type") || "").startsWith("application/json");
  const body = json ? await response.json() : {};
  if (!response.ok) {
    const error = new Error(body.error || `${url}: HTTP ${response.status} ${response.statusText}`);
    error.status = response.status;
    error.retryAfter = Number(response.headers.get("Retry-After")) || 0;
    throw error;
  }
  if (!json) throw new Error(`${url}: expected JSON, got ${response.headers.get("Content-Type") || "nothing"}`);
  return body;
}

// Gateway clock minus browser clock, in seconds: results carry the gateway's capture times.
async function syncClock() {
  const sent = Date.now();
  const { time } = await fetchJson("/healthz");
  emostream.clockOffset = time - (sent + Date.now()) / 2000;
}

async function listCameras() {
  const select = $("#devices");
  const chosen = select.value;
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
  select.replaceChildren(new Option("default camera", ""));
  devices.forEach((device, index) => {
    if (device.deviceId) select.add(new Option(device.label || `camera ${index + 1}`, device.deviceId));
  });
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

function iceGatheringDone(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ICE_GATHERING_TIMEOUT_MS); // send the candidates found so far
  });
}

class Camera {
  constructor(deviceId, name) {
    this.deviceId = deviceId;
    this.stream = null; // the gateway's stream id
    this.status = "stopped";
    this.pc = null;
    this.media = null;
    this.arrivals = []; // [browser time ms, latency s] of recent results
    this.last = null; // the latest result of this camera
    this.correcting = null; // {result, index} while the user picks the right label of a face (panel frozen)
    this.wanted = false; // started by the user and not stopped: keep reconnecting
    this.retries = 0;
    this.retryTimer = null;
    this.element = $("#camera-template").content.firstElementChild.cloneNode(true);
    this.video = $("video", this.element);
    this.name = name;
    $(".name", this.element).textContent = name;
    $(".toggle", this.element).onclick = () => (this.wanted ? this.stop() : this.start());
    $(".remove", this.element).onclick = () => this.remove();
    $(".remove", this.element).setAttribute("aria-label", `Remove ${name}`);
    this.video.setAttribute("aria-label", `${name}: returned video with labelled faces`);
    $(".faces", this.element).setAttribute("aria-label", `${name}: faces`);
    $("#cameras").append(this.element);
    this.setStatus("stopped");
  }

  setStatus(status) {
    this.status = status;
    const line = $(".status", this.element);
    line.textContent = line.title = this.stream ? `${status} (${this.stream})` : status;
    const toggle = $(".toggle", this.element);
    toggle.textContent = this.wanted ? "Stop" : "Start";
    toggle.setAttribute("aria-label", `${toggle.textContent} ${this.name}`);
  }

  // Start (or keep) this camera: reconnects by itself with capped exponential backoff when the
  // connection to the gateway is lost (gateway restarted, network down) until stop() is called.
  start() {
    notice("");
    this.wanted = true;
    this.retries = 0;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  async connect() {
    if (this.pc || !this.wanted) return;
    const pc = (this.pc = new RTCPeerConnection({ iceServers: emostream.config.ice_servers }));
    this.setStatus(this.retries ? "reconnecting" : "starting");
    try {
      if (!this.media) {
        const constraints = this.deviceId ? { deviceId: { exact: this.deviceId } } : true;
        this.media = await navigator.mediaDevices.getUserMedia({ video: constraints, audio: false });
        listCameras(); // labels are only known once the camera is allowed
      }
      pc.addTransceiver(this.media.getVideoTracks()[0], { direction: "sendrecv" });
      const channel = pc.createDataChannel("results");
      channel.onmessage = (event) => this.onResult(JSON.parse(event.data));
      channel.onclose = () => this.lost(pc, "results channel closed");
      pc.ontrack = (event) => {
        this.video.srcObject = new MediaStream([event.track]);
      };
      pc.onconnectionstatechange = () => {
        if (this.pc !== pc) return;
        this.setStatus(pc.connectionState);
        if (pc.connectionState === "connected") this.retries = 0;
        if (pc.connectionState === "failed" || pc.connectionState === "closed") this.lost(pc, pc.connectionState);
        if (pc.connectionState === "disconnected") {
          setTimeout(() => pc.connectionState === "disconnected" && this.lost(pc, "disconnected"), DISCONNECTED_GRACE_MS);
        }
      };
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringDone(pc);
      const answer = await fetchJson("/api/offer", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
      });
      if (this.pc !== pc) return; // stopped meanwhile
      this.stream = answer.stream;
      this.key = answer.key; // proves this page owns the stream (closing it, feedback on it)
      await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
      this.setStatus(pc.connectionState);
    } catch (error) {
      this.lost(pc, `error: ${error.message}`, error.retryAfter);
    }
  }

  // The connection `pc` is gone: close it and, unless the user stopped the camera, try again later.
  // `retryAfter` (s): the gateway asked to wait at least that long (429, 503).
  lost(pc, why, retryAfter = 0) {
    if (this.pc !== pc) return;
    this.disconnect();
    if (!this.wanted) return this.setStatus(why);
    const delay = Math.max(retryAfter * 1000, Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** this.retries));
    this.retries += 1;
    this.setStatus(`${why}; reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${this.retries})`);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  // Close the peer connection (the camera stays open for the next one).
  disconnect() {
    if (this.pc) this.pc.close();
    if (this.stream) {
      const url = `/api/streams/${encodeURIComponent(this.stream)}`;
      fetch(url, { method: "DELETE", credentials: "same-origin", headers: { "X-Stream-Key": this.key } }).catch(
        () => {},
      );
    }
    this.pc = this.stream = null;
    this.video.srcObject = null;
    this.arrivals = [];
    this.last = null; // nothing shown is current any more: no stale faces or rates
    $(".faces", this.element).replaceChildren();
    $(".fps", this.element).textContent = "– results/s";
    $(".latency", this.element).textContent = "– ms";
  }

  stop() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    this.disconnect();
    if (this.media) this.media.getTracks().forEach((track) => track.stop());
    this.media = null;
    this.correcting = null;
    this.setStatus("stopped");
  }

  remove() {
    this.stop();
    this.element.remove();
    emostream.cameras.splice(emostream.cameras.indexOf(this), 1);
  }

  onResult(result) {
    this.last = result;
    emostream.results.push(result);
    if (emostream.results.length > MAX_RESULTS) emostream.results.splice(0, emostream.results.length - MAX_RESULTS);
    const now = performance.now();
    this.arrivals.push([now, Date.now() / 1000 + emostream.clockOffset - result.ts]);
    while (this.arrivals.length && this.arrivals[0][0] < now - WINDOW_MS) this.arrivals.shift();
    const latencies = this.arrivals.map(([, latency]) => latency).sort((a, b) => a - b);
    const median = latencies[Math.floor(latencies.length / 2)];
    $(".fps", this.element).textContent = `${((this.arrivals.length * 1000) / WINDOW_MS).toFixed(1)} results/s`;
    $(".latency", this.element).textContent = `${Math.round(median * 1000)} ms latency`;
    if (!this.correcting) this.showFaces(result);
  }

  showFaces(result) {
    const panel = $(".faces", this.element);
    if (!result.faces.length) {
      panel.replaceChildren(Object.assign(document.createElement("p"), { className: "none", textContent: "no face" }));
      return;
    }
    panel.replaceChildren(
      ...result.faces.map((face, index) => {
        const card = document.createElement("div");
        card.className = `face ${face.label}`;
        const title = document.createElement("h3");
        title.textContent = `face ${index + 1}: ${face.label} ${(face.score * 100).toFixed(0)}%`;
        card.append(title);
        for (const [label, score] of Object.entries(face.scores)) {
          const row = document.createElement("div");
          row.className = "score";
          const name = Object.assign(document.createElement("span"), { textContent: label });
          const meter = Object.assign(document.createElement("meter"), { min: 0, max: 1, value: score });
          meter.setAttribute("aria-label", `face ${index + 1} ${label}`);
          const value = Object.assign(document.createElement("span"), { textContent: `${(score * 100).toFixed(0)}%` });
          row.append(name, meter, value);
          card.append(row);
        }
        if (emostream.config.feedback) card.append(this.correctionControl(result, index)); // only while capture is on
        return card;
      }),
    );
  }

  // "wrong?" freezes the panel on this result (it is re-drawn with every result) and offers the labels.
  correctionControl(result, index) {
    const control = document.createElement("div");
    control.className = "correction";
    if (!this.correcting || this.correcting.result !== result || this.correcting.index !== index) {
      const wrong = Object.assign(document.createElement("button"), { type: "button", className: "wrong" });
      wrong.textContent = "wrong?";
      wrong.onpointerdown = () => {
        this.correcting = { result, index };
        this.showFaces(result);
      };
      control.append(wrong);
      return control;
    }
    const predicted = result.faces[index].label;
    const picker = Object.assign(document.createElement("select"), { className: "right-label" });
    Object.keys(result.faces[index].scores)
      .filter((label) => label !== predicted)
      .forEach((label) => picker.add(new Option(label, label)));
    const send = Object.assign(document.createElement("button"), { type: "button", className: "send" });
    send.textContent = "Send";
    send.onclick = () => this.sendCorrection(result, index, picker.value);
    const cancel = Object.assign(document.createElement("button"), { type: "button", className: "cancel" });
    cancel.textContent = "Cancel";
    cancel.onclick = () => this.endCorrection();
    control.append("right label: ", picker, send, cancel);
    return control;
  }

  async sendCorrection(result, index, label) {
    const face = result.faces[index];
    const body = {
      stream: result.stream,
      seq: result.seq,
      box: face.box,
      label,
      predicted: face.label,
      model_version: result.model_version,
    };
    const note = $(".feedback-note", this.element);
    try {
      const response = await fetch("/api/feedback", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-Stream-Key": this.key },
        body: JSON.stringify(body),
      });
      const answer = await response.json();
      if (response.status === 403 && !emostream.config.feedback) note.textContent = "feedback capture is off";
      else if (!response.ok) note.textContent = `not stored: ${answer.error}`;
      else note.textContent = `thanks: stored as ${answer.label}`;
    } catch (error) {
      note.textContent = `not stored: ${error.message}`;
    }
    this.endCorrection();
  }

  endCorrection() {
    this.correcting = null;
    if (this.last) this.showFaces(this.last);
  }
}

// --- Model & retraining -------------------------------------------------------------------------

function retrainingNotice(text, ok = false) {
  $("#retraining-notice").textContent = text;
  $("#retraining-notice").classList.toggle("ok", ok);
}

// A button running `action`: its resolved text is shown as a success, an error as an error.
function button(text, className, action) {
  const element = Object.assign(document.createElement("button"), { type: "button", className, textContent: text });
  element.onclick = async () => {
    element.disabled = true;
    try {
      retrainingNotice((await action()) || "", true);
    } catch (error) {
      retrainingNotice(error.message.split("; use --force")[0]);
    }
    await refreshRetraining();
  };
  return element;
}

function accuracy(metrics) {
  const value = metrics && metrics.validation_accuracy;
  return typeof value === "number" ? `${(value * 100).toFixed(1)}%` : "–";
}

async function refreshModels() {
  const { live, versions, rollback_to: rollbackTo } = await fetchJson("/api/models");
  const rollback = $("#rollback");
  rollback.disabled = !rollbackTo;
  rollback.textContent = rollbackTo ? `Roll back to ${rollbackTo}` : "Roll back";
  rollback.title = rollbackTo ? "" : "nothing to roll back to: no earlier live version";
  const current = versions.find((version) => version.live);
  $("#live-model").textContent = current
    ? `live model: ${live} (${current.architecture}, validation accuracy ${accuracy(current.metrics)})`
    : "live model: none";
  $("#versions tbody").replaceChildren(
    ...versions.reverse().map((version) => {
      const row = document.createElement("tr");
      row.dataset.version = version.version;
      if (version.live) row.className = "live";
      for (const text of [version.version, version.architecture, version.created_at, accuracy(version.metrics)]) {
        row.append(Object.assign(document.createElement("td"), { textContent: text || "–" }));
      }
      const actions = document.createElement("td");
      if (version.live) actions.textContent = "live";
      else {
        actions.append(
          button("Promote", "promote", async () => {
            const promote = (force) =>
              fetchJson(`/api/models/${encodeURIComponent(version.version)}/promote`, {
                method: "POST",
                headers: { "Content-Type": "application/json" },
                body: JSON.stringify({ force }),
              });
            try {
              await promote(false);
            } catch (error) {
              if (!confirm(`${error.message.split("; use --force")[0]}.\n\nPromote anyway?`)) throw error;
              await promote(true);
            }
            return `promoted: ${version.version} is live`;
          }),
        );
      }
      row.append(actions);
      return row;
    }),
  );
}

function jobItem(job) {
  const item = document.createElement("li");
  item.className = `job ${job.status}`;
  item.dataset.job = job.id;
  const epochs = (job.spec && job.spec.epochs) || 1;
  const last = job.progress[job.progress.length - 1];
  const head = document.createElement("div");
  head.append(
    Object.assign(document.createElement("strong"), { textContent: job.id.slice(0, 8) }),
    ` ${job.description} `,
    Object.assign(document.createElement("span"), { className: "job-status", textContent: job.status }),
  );
  const bar = Object.assign(document.createElement("progress"), { max: epochs, value: job.progress.length });
  const detail = document.createElement("div");
  detail.className = "job-detail";
  const parts = [`epoch ${job.progress.length}/${epochs}`];
  if (last && typeof last.val_accuracy === "number") parts.push(`val_accuracy ${last.val_accuracy.toFixed(4)}`);
  if (job.version) parts.push(`version ${job.version}${job.promoted ? " (promoted)" : ""}`);
  if (job.error) parts.push(`error: ${job.error}`);
  detail.textContent = parts.join(" · ");
  item.append(head, bar, detail);
  if (["queued", "started", "deferred", "scheduled"].includes(job.status)) {
    item.append(
      button("Cancel", "cancel-job", () =>
        fetchJson(`/api/training-jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" }),
      ),
    );
  }
  return item;
}

async function refreshJobs() {
  const { jobs, trainers } = await fetchJson("/api/training-jobs");
  $("#jobs").replaceChildren(...jobs.map(jobItem));
  $("#trainer-status").textContent = trainers
    ? ""
    : "No trainer is running, so a job would never start: run `emostream trainer` on a host with the dataset (`emostream up` runs one).";
  $("#retrain-form button[type=submit]").disabled = !trainers;
}

async function refreshRetraining() {
  try {
    await Promise.all([refreshModels(), refreshJobs()]);
    if ($("#retraining-notice").textContent.startsWith("retraining unavailable")) retrainingNotice("");
  } catch (error) {
    retrainingNotice(`retraining unavailable: ${error.message}`);
  }
}

async function startJob(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const spec = {
    epochs: Number(form.get("epochs")),
    promotion: form.get("promotion"),
    include_feedback: form.get("include_feedback") === "on",
  };
  if (form.get("limit")) spec.limit = Number(form.get("limit"));
  try {
    const job = await fetchJson("/api/training-jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(spec),
    });
    retrainingNotice(`job ${job.id.slice(0, 8)} queued`, true);
  } catch (error) {
    retrainingNotice(error.message);
  }
  await refreshRetraining();
}

// What the returned video's box colours mean (the gateway draws them; /api/config says which).
function showLegend(colors) {
  $("#legend").replaceChildren(
    ...Object.entries(colors).map(([label, color]) => {
      const item = Object.assign(document.createElement("li"), { textContent: label === "late" ? "late result" : label });
      item.style.setProperty("--swatch", color);
      return item;
    }),
  );
}

async function startRetraining() {
  $("#retrain-form").onsubmit = startJob;
  const rollback = button("Roll back", "rollback", async () => {
    const { live } = await fetchJson("/api/models/rollback", { method: "POST" });
    return `rolled back: ${live} is live`;
  });
  rollback.id = "rollback";
  $("#rollback").replaceWith(rollback);
  await refreshRetraining();
  setInterval(refreshRetraining, RETRAINING_POLL_MS);
}

function addCamera(deviceId) {
  const select = $("#devices");
  const option = [...select.options].find((o) => o.value === deviceId);
  const camera = new Camera(deviceId, option ? option.textContent : "default camera");
  emostream.cameras.push(camera);
  return camera;
}

async function main() {
  try {
    emostream.config = await fetchJson("/api/config");
    await syncClock();
    await listCameras();
  } catch (error) {
    notice(`gateway unreachable: ${error.message}`, true);
    return;
  }
  showLegend(emostream.config.colors);
  navigator.mediaDevices.addEventListener("devicechange", listCameras);
  $("#add").onclick = () => addCamera($("#devices").value);
  $("#start-all").onclick = () => emostream.cameras.forEach((camera) => camera.start());
  $("#stop-all").onclick = () => emostream.cameras.forEach((camera) => camera.stop());
  window.addEventListener("pagehide", () => emostream.cameras.forEach((camera) => camera.stop()));
  // models and retraining are an operator's (EMOSTREAM_ADMIN_TOKEN): a camera user does not see them
  if (emostream.config.operator) await startRetraining();
  else $("#retraining").hidden = true;
  // first visit: the default camera's card is there, one click from sending
  const first = addCamera("");
  notice("Press Start (or Start all), then allow the camera when the browser asks.");
  emostream.ready = true;
  if (new URLSearchParams(location.search).get("autostart") === "1") first.start();
}

main();
