// One camera: its peer connection to the gateway, the labels (drawn by the gateway on the returned
// video, or by this browser on a canvas over the local preview), its rates and its faces panel.
import { drawResult } from "./draw.js";
import { FacePanel } from "./faces.js";
import { fetchJson, iceGatheringDone, readVideoStats } from "./net.js";
import { $, ageOf, emostream, notice, shown } from "./state.js";

const MAX_RESULTS = 1000; // window.emostream.results keeps this many, of every camera
const MAX_LOG = 36000; // results a camera keeps for download: an hour at 10 results/s
const WINDOW_MS = 2000; // fps and latency are measured over this window
const STATS_MS = 2000; // video rates are read this often
const RECONNECT_MIN_MS = 500; // a lost connection is retried after this, doubling up to RECONNECT_MAX_MS
const RECONNECT_MAX_MS = 10000;
const DISCONNECTED_GRACE_MS = 4000; // "disconnected" for this long counts as lost (it may recover by itself)
const NO_CAMERA = ["NotAllowedError", "SecurityError", "NotFoundError", "OverconstrainedError"];
export const OVERLAYS = ["server", "browser"];

export async function listCameras() {
  const select = $("#devices");
  const chosen = select.value;
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
  select.replaceChildren(new Option("default camera", ""));
  devices.forEach((device, index) => {
    if (device.deviceId) select.add(new Option(device.label || `camera ${index + 1}`, device.deviceId));
  });
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

// Why the camera could not be opened, and what the user can do: shown once, never retried.
function cameraRefused(error) {
  if (error.name === "NotFoundError" || error.name === "OverconstrainedError") {
    return "No such camera: plug one in or pick another, then press Start.";
  }
  return "The browser blocked the camera: allow it for this page (the camera icon in the address bar, or the site settings), then press Start.";
}

export class Camera {
  constructor(deviceId, name, overlay = "server") {
    this.deviceId = deviceId;
    this.name = name;
    this.stream = null; // the gateway's stream id
    this.key = null;
    this.status = "stopped";
    this.pc = null;
    this.media = null;
    this.arrivals = []; // [browser time ms, latency s] of recent results
    this.last = null; // the latest result of this camera
    this.log = []; // its results, for download (at most MAX_LOG, oldest dropped)
    this.videoStats = { sentFps: null, receivedFps: null, dropped: null };
    this.wanted = false; // started by the user and not stopped: keep reconnecting
    this.retries = 0;
    this.retryTimer = null;
    this.statsTimer = null;
    this.painted = null;
    this.element = $("#camera-template").content.firstElementChild.cloneNode(true);
    this.video = $("video", this.element);
    this.canvas = $("canvas.overlay", this.element);
    this.faces = new FacePanel($(".faces", this.element), this);
    $(".name", this.element).textContent = name;
    $(".toggle", this.element).onclick = () => (this.wanted ? this.stop() : this.start());
    $(".remove", this.element).onclick = () => this.remove();
    $(".remove", this.element).setAttribute("aria-label", `Remove ${name}`);
    $(".download", this.element).onclick = () => this.download();
    $(".download", this.element).setAttribute("aria-label", `Download the results of ${name} (JSON lines)`);
    const mode = $(".overlay-mode", this.element);
    mode.setAttribute("aria-label", `${name}: labels drawn by`);
    mode.onchange = () => (this.overlay = mode.value);
    $(".faces", this.element).setAttribute("aria-label", `${name}: faces`);
    this._overlay = "server";
    this.overlay = overlay;
    $("#cameras").append(this.element);
    this.setStatus("stopped");
    requestAnimationFrame(() => this.paint());
  }

  // Who draws the labels: "server" (the gateway returns labelled video) or "browser" (this page
  // draws them over the local preview and no video comes back). Changing it reconnects.
  get overlay() {
    return this._overlay;
  }

  set overlay(mode) {
    if (!OVERLAYS.includes(mode)) throw new Error(`overlay is one of ${OVERLAYS.join(", ")}, not ${mode}`);
    $(".overlay-mode", this.element).value = mode;
    const label = mode === "server" ? "returned video with labelled faces" : "camera preview with labels drawn here";
    this.video.setAttribute("aria-label", `${this.name}: ${label}`);
    if (mode === this._overlay) return;
    this._overlay = mode;
    if (this.pc) {
      this.disconnect();
      this.connect();
    }
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

  // One request for the camera at a time: a second Start while the browser asks joins the first,
  // so no stream is opened twice and left running.
  openCamera() {
    this.opening ||= (async () => {
      const constraints = this.deviceId ? { deviceId: { exact: this.deviceId } } : true;
      this.media = await navigator.mediaDevices.getUserMedia({ video: constraints, audio: false });
      const track = this.media.getVideoTracks()[0];
      // unplugged, taken by another program, permission revoked: open it again on the next connection
      track.onended = () => this.cameraEnded(track);
      listCameras(); // labels are only known once the camera is allowed
    })().finally(() => (this.opening = null));
    return this.opening;
  }

  cameraEnded(track) {
    if (this.media?.getVideoTracks()[0] !== track) return;
    this.closeCamera();
    this.lost(this.pc, "camera ended");
  }

  async connect() {
    if (this.pc || !this.wanted) return;
    if (this.media && this.media.getVideoTracks()[0]?.readyState !== "live") this.closeCamera();
    if (!this.media) {
      this.setStatus("opening the camera");
      try {
        await this.openCamera();
      } catch (error) {
        if (!NO_CAMERA.includes(error.name)) return this.lost(null, `camera: ${error.message}`);
        this.wanted = false;
        notice(cameraRefused(error), true);
        return this.setStatus(`camera unavailable (${error.name})`);
      }
      if (!this.wanted) return this.closeCamera(); // stopped while the browser asked
      if (this.pc) return;
    }
    let iceServers; // asked for each connection: TURN credentials minted from a secret expire
    try {
      ({ ice_servers: iceServers } = await fetchJson("/api/config"));
    } catch (error) {
      return this.failed(null, error);
    }
    if (this.pc || !this.wanted) return;
    const browserDraws = this.overlay === "browser";
    const pc = (this.pc = new RTCPeerConnection({ iceServers }));
    this.setStatus(this.retries ? "reconnecting" : "starting");
    try {
      const direction = browserDraws ? "sendonly" : "sendrecv";
      const { sender } = pc.addTransceiver(this.media.getVideoTracks()[0], { direction });
      const channel = pc.createDataChannel("results");
      channel.onmessage = (event) => this.onResult(JSON.parse(event.data), event.data);
      channel.onclose = () => this.lost(pc, "results channel closed");
      if (browserDraws) this.video.srcObject = this.media; // boxes are drawn over the camera's own picture
      else pc.ontrack = (event) => (this.video.srcObject = new MediaStream([event.track]));
      pc.onconnectionstatechange = () => this.onState(pc);
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringDone(pc);
      const answer = await fetchJson("/api/offer", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", return_video: !browserDraws }),
      });
      if (this.pc !== pc) return closeStream(answer.stream, answer.key); // stopped or switched meanwhile
      this.stream = answer.stream;
      this.key = answer.key; // proves this page owns the stream (closing it, feedback on it)
      await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
      if (browserDraws) await sendOnlySampled(sender);
      if (this.pc !== pc) return;
      this.setStatus(pc.connectionState);
      this.statsTimer = setInterval(() => {
        this.showRates(); // results that stop coming show as such
        this.faces.expire(ageOf);
        this.readStats(pc);
      }, STATS_MS);
    } catch (error) {
      this.failed(pc, error);
    }
  }

  // A request for the connection `pc` failed: try again later, unless no retry could change the answer
  // (a refused offer, a missing or wrong token, this browser's streams at their limit): then the camera
  // is closed, and the reason shown until the user presses Start again.
  failed(pc, error) {
    const final = [400, 401, 403].includes(error.status) || (error.status === 429 && !error.retryAfter);
    if (!final) return this.lost(pc, `error: ${error.message}`, error.retryAfter);
    if (this.pc !== pc) return;
    this.stop();
    notice(`${this.name}: the gateway refused it: ${error.message}`, true);
    this.setStatus(`refused (${error.status})`);
  }

  onState(pc) {
    if (this.pc !== pc) return;
    this.setStatus(pc.connectionState);
    if (pc.connectionState === "connected") this.retries = 0;
    if (pc.connectionState === "failed" || pc.connectionState === "closed") this.lost(pc, pc.connectionState);
    if (pc.connectionState === "disconnected") {
      setTimeout(() => pc.connectionState === "disconnected" && this.lost(pc, "disconnected"), DISCONNECTED_GRACE_MS);
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
    if (this.stream) closeStream(this.stream, this.key);
    clearInterval(this.statsTimer);
    this.pc = this.stream = null;
    this.video.srcObject = null;
    this.arrivals = [];
    this.last = null; // nothing shown is current any more: no stale faces or rates
    this.videoStats = { sentFps: null, receivedFps: null, dropped: null };
    this.faces.clear();
    $(".fps", this.element).textContent = "– results/s";
    $(".latency", this.element).textContent = "– ms";
    $(".video-rates", this.element).textContent = "";
  }

  stop() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    this.disconnect();
    this.closeCamera();
    this.setStatus("stopped");
  }

  closeCamera() {
    if (this.media) this.media.getTracks().forEach((track) => track.stop());
    this.media = null;
  }

  remove() {
    this.stop();
    this.element.remove();
    emostream.cameras.splice(emostream.cameras.indexOf(this), 1);
  }

  // `line`: the result as it came, kept for download (cheaper than the parsed object).
  onResult(result, line) {
    emostream.results.push(result);
    if (emostream.results.length > MAX_RESULTS) emostream.results.splice(0, emostream.results.length - MAX_RESULTS);
    this.log.push(line);
    if (this.log.length > MAX_LOG) this.log.splice(0, this.log.length - MAX_LOG);
    if (this.last && result.stream === this.last.stream && result.seq <= this.last.seq) return; // answered late
    this.last = result;
    this.arrivals.push([performance.now(), ageOf(result)]);
    this.showRates();
    this.faces.show(result);
  }

  // Results a second and their median latency over the last WINDOW_MS.
  showRates() {
    const now = performance.now();
    while (this.arrivals.length && this.arrivals[0][0] < now - WINDOW_MS) this.arrivals.shift();
    const latencies = this.arrivals.map(([, latency]) => latency).sort((a, b) => a - b);
    const median = latencies[Math.floor(latencies.length / 2)];
    $(".fps", this.element).textContent = `${((this.arrivals.length * 1000) / WINDOW_MS).toFixed(1)} results/s`;
    $(".latency", this.element).textContent = latencies.length ? `${Math.round(median * 1000)} ms latency` : "– ms";
  }

  // Browser-drawn labels, repainted only when what is shown changes: a new result, the result
  // turning late (grey, past half of result_max_age) or expiring, or the preview's size.
  paint() {
    if (!this.element.isConnected) return;
    requestAnimationFrame(() => this.paint());
    const maxAge = emostream.config.result_max_age;
    const result = this.overlay === "browser" ? this.last : null;
    const age = result ? ageOf(result) : Infinity;
    const current = age <= maxAge ? result : null;
    const state = current && `${current.seq}:${age > maxAge / 2}:${this.video.videoWidth}x${this.video.videoHeight}`;
    if (state === this.painted) return;
    this.painted = state;
    drawResult(this.canvas, this.video, current, age > maxAge / 2);
  }

  async readStats(pc) {
    const stats = await readVideoStats(pc).catch(() => null);
    if (!stats || this.pc !== pc) return; // disconnected meanwhile
    this.videoStats = stats;
    const fps = (value) => Math.round(value ?? 0);
    const parts = [`video: sending ${fps(stats.sentFps)} fps`];
    if (this.overlay === "server") parts.push(`returned ${fps(stats.receivedFps)} fps, ${stats.dropped ?? 0} dropped`);
    else parts.push("labels drawn here");
    $(".video-rates", this.element).textContent = parts.join(" · ");
  }

  // Every result this camera received (up to an hour), one JSON object per line.
  download() {
    const lines = this.log.join("\n");
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([lines && `${lines}\n`], { type: "application/x-ndjson" }));
    link.download = `emostream-${this.name.replace(/[^\w-]+/g, "-")}-${new Date().toISOString()}.jsonl`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  // The user is picking a correction of a face in `result`: the gateway keeps its frame until then,
  // however long the pick takes (else only the last few seconds' frames are kept).
  holdFrame(result) {
    fetch("/api/feedback/hold", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Stream-Key": this.key },
      body: JSON.stringify({ stream: result.stream, seq: result.seq }),
    }).catch(() => {}); // the correction itself says what went wrong
  }

  async sendCorrection(result, face, label) {
    const body = {
      stream: result.stream,
      seq: result.seq,
      box: face.box,
      label,
      predicted: shown(face).label, // what the user saw and says is wrong
      model_version: result.model_version,
    };
    const note = $(".feedback-note", this.element);
    try {
      const answer = await fetchJson("/api/feedback", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Stream-Key": this.key },
        body: JSON.stringify(body),
      });
      note.textContent = `thanks: stored as ${answer.label}`;
    } catch (error) {
      note.textContent = error.status === 403 && !emostream.config.feedback ? "feedback capture is off" : `not stored: ${error.message}`;
    }
  }
}

// Tell the gateway a stream is done (also from a closing page: keepalive outlives it).
function closeStream(stream, key) {
  const url = `/api/streams/${encodeURIComponent(stream)}`;
  const headers = { "X-Stream-Key": key };
  fetch(url, { method: "DELETE", credentials: "same-origin", headers, keepalive: true }).catch(() => {});
}

// With no video coming back, the gateway needs only the frames it samples: send no more (the
// preview stays at the camera's rate), and under load lower the rate rather than the resolution,
// since the boxes are drawn in the pixels the gateway received over the full-resolution preview.
async function sendOnlySampled(sender) {
  const parameters = sender.getParameters();
  parameters.degradationPreference = "maintain-resolution";
  for (const encoding of parameters.encodings || []) encoding.maxFramerate = emostream.config.sample_fps;
  await sender.setParameters(parameters).catch(() => {});
}
