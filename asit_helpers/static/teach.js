// The page's Teach panel: add classes, record or upload a few examples and some background, Train, try the
// taught model. Talks to the /teach routes (asit_helpers/teach_routes.py); records with the same recorder.js
// the page and the notebook widget use (16 kHz mono WAV made in the browser).
import { startRecording } from "./recorder.js";

const $ = (id) => document.getElementById(id);
const MAX_RECORD_SECONDS = 30;
let session = null; // the /teach session id
let recording = null; // {controller, target} while recording
let trained = false;

function say(text, isError = false) {
  $("teach-status").textContent = text;
  $("teach-status").classList.toggle("error", isError);
}

async function call(method, path, body, type) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = body;
    init.headers["Content-Type"] = type || "application/octet-stream";
  }
  const resp = await fetch(path, init);
  const data = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
  if (!resp.ok) throw new Error(data.error || `HTTP ${resp.status}`);
  return data;
}

async function ensureSession() {
  if (session) return;
  const data = await call("POST", "teach");
  session = data.session;
  $("teach").dataset.session = session;
  $("teach-session").textContent = `session ${session.slice(0, 6)}…`;
}

function render(state) {
  const target = $("teach-target");
  const chosen = target.value;
  const names = [...Object.keys(state.classes), "background"];
  target.replaceChildren(...names.map((n) => new Option(n === "background" ? "background (no event)" : n, n)));
  if (names.includes(chosen)) target.value = chosen;
  const list = $("teach-classes");
  list.replaceChildren(
    ...names.map((name) => {
      const files = state.recordings[name] || [];
      const li = document.createElement("li");
      li.dataset.name = name;
      const title = document.createElement("b");
      title.textContent = name === "background" ? "background (the 'no event' answer)" : name;
      const count = document.createElement("span");
      count.className = "teach-count";
      count.textContent = ` ${files.length} recording(s) `;
      li.append(title, count);
      for (const file of files) {
        const del = document.createElement("button");
        del.type = "button";
        del.className = "teach-delete small";
        del.textContent = `× ${file}`;
        del.title = `delete ${name}/${file}`;
        del.addEventListener("click", () => guard(async () => render(await call("DELETE", `teach/${session}/clips/${encodeURIComponent(name)}/${file}`))));
        li.append(del);
      }
      return li;
    })
  );
  $("teach-train").disabled = Object.values(state.classes).every((n) => n === 0);
}

async function guard(fn) {
  try {
    await fn();
  } catch (err) {
    say(err.message, true);
  }
}

async function addClass() {
  const name = $("teach-name").value.trim();
  if (!name) return say("Type a class name first.", true);
  await ensureSession();
  render(await call("POST", `teach/${session}/classes`, JSON.stringify({ name }), "application/json"));
  $("teach-name").value = "";
  $("teach-target").value = name;
  say(`Class ${name} added: record or upload 8 or more examples of it.`);
}

async function saveClip(bytes, target, label) {
  await ensureSession();
  const state = await call("POST", `teach/${session}/clips/${encodeURIComponent(target)}?filename=${encodeURIComponent(label)}`, bytes);
  render(state);
  say(`Saved ${target}/${state.saved}.`);
}

async function toggleRecord() {
  if (recording) {
    const { controller, target } = recording;
    recording = null;
    $("teach-record").textContent = "● Record";
    const wav = await controller.stop();
    return saveClip(wav, target, "recording.wav");
  }
  const target = $("teach-target").value;
  if (!target) return say("Add a class first (or pick background).", true);
  const controller = await startRecording();
  recording = { controller, target };
  $("teach-record").textContent = `■ Stop (${target})`;
  say(`Recording into ${target}… press Stop when done.`);
  setTimeout(() => recording && recording.controller === controller && guard(toggleRecord), MAX_RECORD_SECONDS * 1000);
}

async function uploadFiles() {
  const target = $("teach-target").value;
  for (const file of $("teach-files").files) {
    await saveClip(await file.arrayBuffer(), target, file.name);
  }
  $("teach-files").value = "";
}

async function train() {
  await ensureSession();
  const started = performance.now();
  $("teach-train").disabled = true;
  $("teach-progress").hidden = false;
  const tick = setInterval(() => say(`Training… ${((performance.now() - started) / 1000).toFixed(1)} s`), 200);
  try {
    const state = await call("POST", `teach/${session}/train`);
    const r = state.report;
    trained = true;
    $("teach-try").disabled = false;
    $("teach-report").textContent =
      `${r.classes.join(", ")}${r.no_event_label ? " + no event" : ""} · model ready in ${r.seconds_to_model.toFixed(1)} s` +
      (r.cv_accuracy === null ? "" : ` · cross-validated accuracy ${r.cv_accuracy.toFixed(2)} (most frequent answer ${r.chance.toFixed(2)})`);
    say(`Trained in ${((performance.now() - started) / 1000).toFixed(1)} s: the taught model is served for this session and saved.`);
    render(state);
  } finally {
    clearInterval(tick);
    $("teach-progress").hidden = true;
    $("teach-train").disabled = false;
  }
}

async function tryIt() {
  if (!trained) return say("Train first.", true);
  if (recording) return say("Stop the recording first.", true);
  const controller = await startRecording();
  $("teach-try").disabled = true;
  say("Listening for 2 s…");
  await new Promise((r) => setTimeout(r, 2000));
  const wav = await controller.stop();
  $("teach-try").disabled = false;
  const pred = await call("POST", `teach/${session}/predict`, wav);
  $("teach-answer").textContent = pred.no_event ? "no event" : `${pred.label} (${(pred.score * 100).toFixed(0)} %)`;
  say("Heard it. Try again, or record more examples and Train again.");
}

export function initTeachPanel() {
  if (!$("teach")) return;
  $("teach-add").addEventListener("click", () => guard(addClass));
  $("teach-name").addEventListener("keydown", (e) => e.key === "Enter" && guard(addClass));
  $("teach-record").addEventListener("click", () => guard(toggleRecord));
  $("teach-files").addEventListener("change", () => guard(uploadFiles));
  $("teach-train").addEventListener("click", () => guard(train));
  $("teach-try").addEventListener("click", () => guard(tryIt));
}

initTeachPanel();
