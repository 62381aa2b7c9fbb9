// Labels drawn in the browser: boxes and smoothed labels of a result on a canvas over the local
// camera preview, in the gateway's colours (/api/config), grey once the result lags the video.
import { emostream, percent, shown } from "./state.js";

// Draw `result` onto `canvas`, sized to the preview's video: its boxes are in pixels of the frame
// the gateway received (`result.size`, which the browser may have sent smaller than the preview);
// `stale` draws grey boxes without scores.
export function drawResult(canvas, video, result, stale) {
  const [width, height] = [video.videoWidth, video.videoHeight];
  if (canvas.width !== width || canvas.height !== height) [canvas.width, canvas.height] = [width, height];
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, width, height);
  if (!result || !width) return;
  const colors = emostream.config.colors;
  const thickness = Math.max(2, Math.round(width / 200));
  const fontSize = Math.max(11, Math.round(width / 30));
  context.font = `600 ${fontSize}px system-ui, sans-serif`;
  context.textBaseline = "top";
  const crisp = (thickness % 2) / 2; // an odd-width line centred on a pixel's middle covers whole pixels
  const scale = result.size ? width / result.size[0] : 1;
  for (const face of result.faces) {
    const [x, y, w, h] = face.box.map((v, i) => Math.round(v * scale) + (i < 2 ? crisp : 0));
    const { label, score } = shown(face);
    const color = stale ? colors.late : colors[label] || colors.late;
    context.lineWidth = thickness;
    context.strokeStyle = color;
    context.strokeRect(x, y, w, h);
    const text = stale ? label : `${label} ${percent(score)}`;
    const banner = fontSize + 6;
    const top = y >= banner ? y - banner : y + h;
    context.fillStyle = color;
    context.fillRect(x - thickness / 2, top, context.measureText(text).width + 8, banner);
    context.fillStyle = "#000";
    context.fillText(text, x + 4, top + 3);
  }
}
