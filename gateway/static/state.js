// The page's shared state, on window.emostream for automation: results of every camera (newest
// last), the cameras, the gateway's clock offset and its /api/config.
export const emostream = (window.emostream = { results: [], cameras: [], clockOffset: 0, config: null, ready: false });

export const $ = (selector, root = document) => root.querySelector(selector);

// A new element with `properties` (and attributes for names with a dash or "aria").
export function element(tag, properties = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(properties)) {
    if (name.includes("-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  node.append(...children);
  return node;
}

export function notice(text, error = false) {
  $("#notice").textContent = text;
  $("#notice").classList.toggle("error", error);
}

// Seconds since a result's frame was captured, on the gateway's clock.
export const ageOf = (result) => Date.now() / 1000 + emostream.clockOffset - result.ts;

// The label and score to show for a face: its track's smoothed ones when it has a track.
export const shown = (face) => face.smoothed || face;

export const percent = (value) => `${(value * 100).toFixed(0)}%`;
