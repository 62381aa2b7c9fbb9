// Models & retraining, an operator's section: versions (promote, roll back), retraining jobs.
// Polled every RETRAINING_POLL_MS while the tab is visible, and at once when it shows again.
import { fetchJson } from "./net.js";
import { $ } from "./state.js";

const RETRAINING_POLL_MS = 2000;

function retrainingNotice(text, ok = false) {
  $("#retraining-notice").textContent = text;
  $("#retraining-notice").classList.toggle("ok", ok);
}

// The API's promotion refusals end with how to force them; the page asks instead.
const FORCE_HINT = '; send {"force": true}';
const withoutForceHint = (message) => message.split(FORCE_HINT)[0];

// A button running `action`: its resolved text is shown as a success, an error as an error.
function button(text, className, action) {
  const element = Object.assign(document.createElement("button"), { type: "button", className, textContent: text });
  element.onclick = async () => {
    element.disabled = true;
    try {
      retrainingNotice((await action()) || "", true);
    } catch (error) {
      retrainingNotice(withoutForceHint(error.message));
    }
    await redrawRetraining();
  };
  return element;
}

function accuracy(metrics) {
  const value = metrics && metrics.validation_accuracy;
  return typeof value === "number" ? `${(value * 100).toFixed(1)}%` : "–";
}

// What each list shows, as the JSON it was drawn from: a list is drawn again only when that changes,
// so a poll neither takes the focus from a control nor re-enables a button whose request is running.
const drawn = { models: "", jobs: "" };

function changed(name, data) {
  const json = JSON.stringify(data);
  if (drawn[name] === json) return false;
  drawn[name] = json;
  return true;
}

// Versions by creation time, newest first (their ids sort by architecture first); unreadable ones last.
const newestFirst = (versions) =>
  [...versions].sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));

async function refreshModels() {
  const models = await fetchJson("/api/models");
  if (!changed("models", models)) return;
  const { live, versions, rollback_to: rollbackTo } = models;
  const rollback = $("#rollback");
  rollback.disabled = !rollbackTo;
  rollback.textContent = rollbackTo ? `Roll back to ${rollbackTo}` : "Roll back";
  rollback.title = rollbackTo ? "" : "nothing to roll back to: no earlier live version";
  const current = versions.find((version) => version.live);
  if (!current) $("#live-model").textContent = "live model: none";
  else if (current.error) $("#live-model").textContent = `live model: ${live} (unreadable: ${current.error})`;
  else {
    $("#live-model").textContent =
      `live model: ${live} (${current.architecture}, validation accuracy ${accuracy(current.metrics)})`;
  }
  $("#versions tbody").replaceChildren(
    ...newestFirst(versions).map((version) => {
      const row = document.createElement("tr");
      row.dataset.version = version.version;
      if (version.live) row.className = "live";
      for (const text of [version.version, version.architecture, version.created_at, accuracy(version.metrics)]) {
        row.append(Object.assign(document.createElement("td"), { textContent: text || "–" }));
      }
      const actions = document.createElement("td");
      if (version.error) {
        row.classList.add("unreadable"); // nothing to promote: the store cannot read it
        actions.textContent = `unreadable: ${version.error}`;
      } else if (version.live) actions.textContent = "live";
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
              // only a refusal on accuracy can be overridden; a version that cannot be served cannot
              const overridable = error.status === 409 && error.message.includes(FORCE_HINT);
              if (!overridable || !confirm(`${withoutForceHint(error.message)}.\n\nPromote anyway?`)) throw error;
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
  if (job.not_promoted) parts.push(`not promoted: ${job.not_promoted}`);
  if (job.error) parts.push(`error: ${job.error}`);
  detail.textContent = parts.join(" · ");
  item.append(head, bar, detail);
  if (["queued", "started", "deferred", "scheduled"].includes(job.status)) {
    item.append(
      button("Cancel", "cancel-job", async () => {
        await fetchJson(`/api/training-jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" });
        return `job ${job.id.slice(0, 8)} cancelled`;
      }),
    );
  }
  return item;
}

async function refreshJobs() {
  const listing = await fetchJson("/api/training-jobs");
  if (!changed("jobs", listing)) return;
  const { jobs, trainers } = listing;
  $("#jobs").replaceChildren(...jobs.map(jobItem));
  $("#trainer-status").textContent = trainers
    ? ""
    : "No trainer is running, so a job would never start: run `emostream trainer` on a host with the dataset (`emostream up` runs one).";
  $("#retrain-form button[type=submit]").disabled = !trainers;
}

let refreshing = null; // the refresh in flight: polls wait for it rather than race it

// After an action: both lists drawn afresh, so the control just used is enabled again (or not).
function redrawRetraining() {
  drawn.models = drawn.jobs = "";
  return refreshRetraining();
}

function refreshRetraining() {
  refreshing ||= refreshBoth().finally(() => (refreshing = null));
  return refreshing;
}

async function refreshBoth() {
  try {
    await Promise.all([refreshModels(), refreshJobs()]);
    if ($("#retraining-notice").textContent.startsWith("retraining unavailable")) retrainingNotice("");
  } catch (error) {
    retrainingNotice(`retraining unavailable: ${error.message}`);
  }
}

async function startJob(event) {
  event.preventDefault();
  const submit = event.target.querySelector("button[type=submit]");
  if (submit.disabled) return;
  submit.disabled = true; // one job per click, however fast the clicks come (the redraw enables it again)
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
  await redrawRetraining();
}

export async function startRetraining() {
  $("#retrain-form").onsubmit = startJob;
  const rollback = button("Roll back", "rollback", async () => {
    const { live } = await fetchJson("/api/models/rollback", { method: "POST" });
    return `rolled back: ${live} is live`;
  });
  rollback.id = "rollback";
  $("#rollback").replaceWith(rollback);
  await refreshRetraining();
  setInterval(() => document.hidden || refreshRetraining(), RETRAINING_POLL_MS);
  document.addEventListener("visibilitychange", () => document.hidden || refreshRetraining());
}
