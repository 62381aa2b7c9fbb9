// A camera's faces panel: one card per face track, updated in place as results arrive. Each card
// shows the smoothed label (the raw one of the frame beside it), the 7 scores, a chart of the
// track's smoothed scores over the last 30 s, and (while feedback capture is on) a correction.
import { element, emostream, percent, shown } from "./state.js";

const TIMELINE_S = 30;

export class FacePanel {
  constructor(root, camera) {
    this.root = root;
    this.camera = camera;
    this.cards = new Map(); // track -> card element
    this.history = new Map(); // track -> [[ts, scores]] of the last TIMELINE_S seconds
    this.none = element("p", { className: "none", textContent: "no face", hidden: true });
    this.announcer = element("p", { className: "announce", role: "status" });
    root.replaceChildren(this.none, this.announcer);
  }

  show(result) {
    const seen = new Set();
    result.faces.forEach((face, index) => {
      const track = face.track ?? `frame-${index}`;
      seen.add(track);
      this.remember(track, result.ts, face);
      const card = this.cards.get(track) || this.addCard(track);
      card.seenAt = result.ts;
      card.result = result;
      this.update(card, result, face);
    });
    this.drop((card) => !seen.has(card.track) && result.ts - card.seenAt > emostream.config.track_keep_s);
  }

  // Called while no result comes: a card whose face was last seen longer ago than its track lives
  // goes (`ageOf`: a result's age by the gateway's clock).
  expire(ageOf) {
    if (this.cards.size) this.drop((card) => ageOf(card.result) > emostream.config.track_keep_s);
  }

  // Remove the cards `gone` picks; a face missed for a frame or two keeps its card as long as its
  // track lives (/api/config), and a correction in progress outlives its face.
  drop(gone) {
    for (const [track, card] of this.cards) {
      if (card.correcting || !gone(card)) continue;
      card.remove();
      this.cards.delete(track);
      this.history.delete(track);
    }
    this.none.hidden = this.cards.size > 0;
  }

  clear() {
    for (const card of this.cards.values()) card.remove();
    this.cards.clear();
    this.history.clear();
    this.none.hidden = true;
    this.announcer.textContent = "";
  }

  remember(track, ts, face) {
    const points = this.history.get(track) || [];
    points.push([ts, shown(face).scores || face.scores]);
    while (points.length && points[0][0] < ts - TIMELINE_S) points.shift();
    this.history.set(track, points);
  }

  addCard(track) {
    const name = typeof track === "number" ? `face ${track}` : "face";
    const card = element("div", { className: "face" });
    card.dataset.track = track;
    card.track = track;
    card.name = name;
    card.title_ = element("h3");
    card.raw = element("p", { className: "raw" });
    card.meters = {};
    const rows = Object.keys(emostream.config.colors)
      .filter((label) => label !== "late")
      .map((label) => {
        const meter = element("meter", { min: 0, max: 1, "aria-label": `${name} ${label}` });
        const value = element("span");
        card.meters[label] = [meter, value];
        return element("div", { className: "score" }, element("span", { textContent: label }), meter, value);
      });
    card.timeline = element("canvas", {
      className: "timeline",
      width: 300,
      height: 60,
      role: "img",
      "aria-label": `${name}: smoothed scores over the last ${TIMELINE_S} s`,
    });
    card.append(card.title_, card.raw, ...rows, card.timeline);
    if (emostream.config.feedback) card.append(this.correction(card)); // only while capture is on
    this.root.insertBefore(card, this.none);
    this.cards.set(track, card);
    return card;
  }

  update(card, result, face) {
    const { label, score } = shown(face);
    if (card.shownLabel !== label) {
      if (card.shownLabel) this.announcer.textContent = `${this.camera.name}, ${card.name}: ${label}`;
      card.shownLabel = label;
      card.className = `face ${label}`;
    }
    card.result = result;
    card.face = face;
    card.title_.textContent = `${card.name}: ${label} ${percent(score)}`;
    card.raw.textContent = `this frame: ${face.label} ${percent(face.score)}`;
    for (const [name, [meter, value]] of Object.entries(card.meters)) {
      meter.value = face.scores[name] ?? 0;
      value.textContent = percent(face.scores[name] ?? 0);
    }
    drawTimeline(card.timeline, this.history.get(card.track) || []);
  }

  // "wrong?" opens a picker of the other labels for the face as it is at that moment; the card
  // keeps updating meanwhile. Buttons and the select work from the keyboard.
  correction(card) {
    const control = element("div", { className: "correction" });
    const closed = () => {
      card.correcting = null;
      const wrong = element("button", { type: "button", className: "wrong", textContent: "wrong?" });
      wrong.setAttribute("aria-label", `${card.name}: wrong label?`);
      wrong.onclick = opened;
      control.replaceChildren(wrong);
      return wrong;
    };
    const opened = () => {
      card.correcting = { result: card.result, face: card.face };
      this.camera.holdFrame(card.result);
      const predicted = shown(card.face).label;
      const picker = element("select", { className: "right-label", "aria-label": `${card.name}: right label` });
      Object.keys(card.face.scores)
        .filter((label) => label !== predicted)
        .forEach((label) => picker.add(new Option(label, label)));
      const send = element("button", { type: "button", className: "send", textContent: "Send" });
      const cancel = element("button", { type: "button", className: "cancel", textContent: "Cancel" });
      send.onclick = async () => {
        send.disabled = true; // one correction per press
        const { result, face } = card.correcting;
        await this.camera.sendCorrection(result, face, picker.value);
        closed().focus();
      };
      cancel.onclick = () => closed().focus();
      control.onkeydown = (event) => event.key === "Escape" && card.correcting && cancel.click();
      control.replaceChildren("right label: ", picker, send, cancel);
      picker.focus();
    };
    closed();
    return control;
  }
}

// The smoothed scores of one track over the last TIMELINE_S seconds, one line per class.
function drawTimeline(canvas, points) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  if (points.length < 2) return;
  const end = points[points.length - 1][0];
  const x = (ts) => width - ((end - ts) / TIMELINE_S) * width;
  const y = (p) => height - 1 - p * (height - 2);
  context.lineWidth = 1.5;
  for (const [label, color] of Object.entries(emostream.config.colors)) {
    if (label === "late") continue;
    context.strokeStyle = color;
    context.beginPath();
    points.forEach(([ts, scores], i) => context[i ? "lineTo" : "moveTo"](x(ts), y(scores[label] ?? 0)));
    context.stroke();
  }
}
