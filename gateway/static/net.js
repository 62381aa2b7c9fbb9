// Talking to the gateway: JSON requests, its clock, and ICE gathering.
import { emostream } from "./state.js";

const ICE_GATHERING_TIMEOUT_MS = 5000;

// Same-origin requests carry the token cookie set by /?token=... (HttpOnly: scripts never see the token).
// An error carries the HTTP status and, for a 429 or 503, the seconds Retry-After asks to wait.
export async function fetchJson(url, options) {
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
export async function syncClock() {
  const sent = Date.now();
  const { time } = await fetchJson("/healthz");
  emostream.clockOffset = time - (sent + Date.now()) / 2000;
}

export function iceGatheringDone(pc) {
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

// The video stats of a peer connection: frames per second sent and returned, returned frames dropped.
export async function readVideoStats(pc) {
  const stats = { sentFps: null, receivedFps: null, dropped: null };
  for (const report of (await pc.getStats()).values()) {
    if (report.kind !== "video") continue;
    if (report.type === "outbound-rtp") stats.sentFps = report.framesPerSecond ?? 0;
    if (report.type === "inbound-rtp") {
      stats.receivedFps = report.framesPerSecond ?? 0;
      stats.dropped = report.framesDropped ?? 0;
    }
  }
  return stats;
}
