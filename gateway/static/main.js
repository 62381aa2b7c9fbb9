// emostream page: one RTCPeerConnection per camera. The gateway answers every sampled frame with
// a result (the wire Result JSON, faces with tracks and smoothed labels) on the "results" data
// channel, and either returns the video with the labels drawn on it or leaves drawing to this page.
import { startRetraining } from "./admin.js";
import { Camera, OVERLAYS, listCameras } from "./camera.js";
import { fetchJson, syncClock } from "./net.js";
import { $, emostream, notice } from "./state.js";

// ?overlay=browser|server: who draws the labels for cameras added on this page (default: server).
function overlayFromUrl() {
  const asked = new URLSearchParams(location.search).get("overlay");
  return OVERLAYS.includes(asked) ? asked : "server";
}

// What the box colours mean (/api/config gives the gateway's; the page draws with the same).
function showLegend(colors) {
  $("#legend").replaceChildren(
    ...Object.entries(colors).map(([label, color]) => {
      const item = Object.assign(document.createElement("li"), { textContent: label === "late" ? "late result" : label });
      item.style.setProperty("--swatch", color);
      return item;
    }),
  );
}

function addCamera(deviceId) {
  const option = [...$("#devices").options].find((o) => o.value === deviceId);
  const camera = new Camera(deviceId, option ? option.textContent : "default camera", overlayFromUrl());
  emostream.cameras.push(camera);
  return camera;
}

async function main() {
  if (!navigator.mediaDevices) {
    notice("Cameras need a secure page: open it over https (or on http://localhost).", true);
    return;
  }
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
