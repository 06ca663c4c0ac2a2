// jobkit /ui: a job's live progress over Server-Sent Events, lists that refresh themselves, and a confirmation
// before an action that cannot be undone. No framework, nothing fetched from elsewhere.
"use strict";

const FINISHED = new Set(["completed", "failed", "cancelled"]);
// The events a job's stream may name; an unnamed event arrives as "message".
const EVENT_NAMES = ["message", "snapshot", "progress", "state", "added", "active", "waiting", "delayed", "retrying",
  "completed", "failed", "cancelled", "cancel-requested", "stalled", "waiting-children", "removed"];

function showProgress(live, percent, message) {
  const bar = live.querySelector("progress");
  const label = live.querySelector(".pct");
  const rounded = Math.round(percent * 10) / 10;
  bar.value = percent;
  bar.dataset.percent = String(percent);
  bar.textContent = label.textContent = `${rounded} %`;
  if (typeof message === "string") live.querySelector("[data-message]").textContent = message;
}

function showState(state) {
  const badge = document.getElementById("job-state");
  if (!badge || !state) return;
  badge.textContent = state;
  badge.className = `state state-${state}`;
}

// Follow one job: move its bar on each event; when it ends, reload the page to show its result or error.
function followJob(live) {
  const source = new EventSource(live.dataset.events);
  const onEvent = (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return; // a ping or a comment
    }
    const progress = data.progress || (typeof data.percent === "number" ? data : null);
    if (progress && typeof progress.percent === "number") showProgress(live, progress.percent, progress.message);
    const state = data.state || (data.job && data.job.state);
    showState(state);
    if (FINISHED.has(state)) {
      source.close();
      window.setTimeout(() => window.location.reload(), 300);
    }
  };
  for (const name of EVENT_NAMES) source.addEventListener(name, onEvent);
}

// Every few seconds, fetch this page again and swap in the fresh copies of its `sections` (not while hidden).
function refreshSections(sections, every) {
  const tick = async () => {
    if (!document.hidden) {
      try {
        const response = await fetch(window.location.href, {credentials: "same-origin"});
        if (response.ok) {
          const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
          for (const section of sections) {
            const replacement = fresh.getElementById(section.id);
            if (replacement) section.replaceChildren(...replacement.childNodes);
          }
        }
      } catch {
        // the server is away for a moment: try again at the next tick
      }
    }
    window.setTimeout(tick, every);
  };
  window.setTimeout(tick, every);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-events]").forEach(followJob);
  const sections = [...document.querySelectorAll("[data-refresh]")];
  if (sections.length) refreshSections(sections, 1000 * Math.min(...sections.map((s) => Number(s.dataset.refresh))));
  // Delegated, so forms in refreshed sections ask too.
  document.body.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });
});
