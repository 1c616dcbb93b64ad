// The page's Teach panel: add classes, record or upload a few examples and some background, Train, then Listen
// with the taught model. Talks to the /teach routes (asit_helpers/teach_routes.py); records, streams and draws
// with the same recorder.js the page's Listen card and the notebook widget use: Listen is live listening
// (startListening over the /live API, served for this session's model at teach/<id>/live).
import { NO_EVENT, Timeline, drawListening, httpLiveTransport, startListening, startRecording } from "./recorder.js";

const $ = (id) => document.getElementById(id);
const MAX_RECORD_SECONDS = 30;
let session = null; // the /teach session id
let recording = null; // {controller, target} while recording
let trained = false;
/** Live listening with the taught model; window.asitTeachListen for tests (read only). */
const live = { listener: null, timeline: null, levels: [], info: null, frame: 0, meter: 0 };
window.asitTeachListen = live;

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
  await stopListening(); // training replaces the model: listening on the old one ends on the server
  const started = performance.now();
  $("teach-train").disabled = true;
  $("teach-progress").hidden = false;
  const tick = setInterval(() => say(`Training… ${((performance.now() - started) / 1000).toFixed(1)} s`), 200);
  try {
    const state = await call("POST", `teach/${session}/train`);
    const r = state.report;
    trained = true;
    $("teach-report").textContent =
      `${r.classes.join(", ")}${r.no_event_label ? " + no event" : ""} · model ready in ${r.seconds_to_model.toFixed(1)} s` +
      (r.cv_accuracy === null ? "" : ` · cross-validated accuracy ${r.cv_accuracy.toFixed(2)} (most frequent answer ${r.chance.toFixed(2)})`);
    say(`Trained in ${((performance.now() - started) / 1000).toFixed(1)} s: the taught model is served for this session ` +
      "and saved. Press Listen to hear it.");
    render(state);
  } finally {
    clearInterval(tick);
    $("teach-progress").hidden = true;
    $("teach-train").disabled = false;
    listenButtons(Boolean(live.listener));
  }
}

function showUpdates(updates, answer) {
  for (const u of updates) live.timeline.add(u);
  $("teach-rate").textContent = `${(answer.updates_per_s || 0).toFixed(1)} updates/s · ${answer.dropped_hops || 0} hops dropped`;
  const u = updates[updates.length - 1];
  if (!u) return;
  $("teach-answer").textContent = u.no_event ? NO_EVENT : u.label;
  $("teach-answer").className = u.no_event ? "muted" : "headline";
  $("teach-score").textContent = u.no_event ? "" : `${(u.score * 100).toFixed(0)}%`;
  $("teach-window").textContent = `(${u.window_start_s.toFixed(1)}–${u.t_end_s.toFixed(1)} s; ` +
    `classified in ${Math.round(u.classify_ms)} ms)`;
  if (!live.frame) live.frame = requestAnimationFrame(drawListen);
}

function drawListen() {
  live.frame = 0;
  if (!live.timeline) return;
  drawListening($("teach-timeline"), $("teach-wave"), live.timeline, { waveHeight: 160 });
}

function listenButtons(listening) {
  $("teach-listen").disabled = listening || !trained;
  $("teach-stop").disabled = !listening;
  $("teach").dataset.listen = listening ? "listening" : "idle";
}

function recordLevels(chunk, startS) { // levels of the audio the server got (64 ms blocks), on the session's clock
  for (let a = 0; a < chunk.length; a += 1024) {
    const block = chunk.subarray(a, a + 1024);
    let sum = 0;
    for (let i = 0; i < block.length; i++) sum += block[i] * block[i];
    live.levels.push([startS + a / 16000, block.length / 16000, Math.sqrt(sum / block.length)]);
  }
  if (live.levels.length > 20000) live.levels.splice(0, live.levels.length - 20000); // ~20 min: bounded
}

async function listen() {
  if (!trained) return say("Train first.", true);
  if (recording) return say("Stop the recording first.", true);
  if (live.listener) return;
  listenButtons(true);
  live.levels = [];
  say("Asking for the microphone…");
  try {
    live.listener = await startListening({
      transport: httpLiveTransport(`teach/${session}/live`),
      workletUrl: "static/capture-worklet.js",
      onUpdates: showUpdates,
      onSent: recordLevels,
      onError: (message) => {
        live.listener = null;
        clearInterval(live.meter);
        $("teach-level").value = 0;
        listenButtons(false);
        say(message, true);
      },
    });
  } catch (err) {
    live.listener = null;
    listenButtons(false);
    throw err;
  }
  live.info = live.listener.info;
  live.timeline = new Timeline({ labels: live.info.labels });
  $("teach-live").hidden = false;
  live.meter = setInterval(() => { $("teach-level").value = live.listener ? live.listener.level() : 0; }, 100);
  say(`Listening with the taught model: every ${live.info.hop_s} s it classifies the last ${live.info.window_s} s. ` +
    "Press Stop to end.");
}

async function stopListening() {
  const listener = live.listener;
  if (!listener) return;
  live.listener = null;
  clearInterval(live.meter);
  $("teach-level").value = 0;
  await listener.stop();
  const s = listener.stats();
  listenButtons(false);
  say(`Stopped: ${(s.sentSamples / 16000).toFixed(1)} s of audio, ${s.updates} updates. Record more examples and ` +
    "Train again, or Listen again.");
}

export function initTeachPanel() {
  if (!$("teach")) return;
  $("teach-add").addEventListener("click", () => guard(addClass));
  $("teach-name").addEventListener("keydown", (e) => e.key === "Enter" && guard(addClass));
  $("teach-record").addEventListener("click", () => guard(toggleRecord));
  $("teach-files").addEventListener("change", () => guard(uploadFiles));
  $("teach-train").addEventListener("click", () => guard(train));
  $("teach-listen").addEventListener("click", () => guard(listen));
  $("teach-stop").addEventListener("click", () => guard(stopListening));
}

initTeachPanel();
