// The ASiT page: upload or record a clip, POST it to /predict, draw the top-k chart and the attention curve over the
// waveform; or listen continuously (live API) with a scrolling timeline. Plain JS, no dependencies: recording,
// streaming, the timeline and the drawing come from the shared recorder.js (the notebook widget uses it too).
import {
  NO_EVENT, Timeline, drawAttention, drawListening, httpLiveTransport, startListening, startRecording, toWav16kMono,
} from "./recorder.js";

const $ = (id) => document.getElementById(id);
const MAX_RECORD_SECONDS = 30; // a recording stops by itself; longer audio is better uploaded as a file
const MAX_NAME_CHARS = 60;

let recording = null; // controller from startRecording
let meterTimer = 0;

function setState(state, message) {
  document.body.dataset.state = state;
  if (message !== undefined) $("status").textContent = message;
}

function clearResult() {
  $("result").hidden = true;
  $("result-label").textContent = "";
  $("result-score").textContent = "";
  $("result-meta").textContent = "";
  $("result-aggregation").hidden = true;
  $("result-steady").hidden = true;
  $("topk").replaceChildren();
  $("windows").replaceChildren();
}

function showError(message) {
  clearResult(); // the previous clip's prediction must not stay on screen under the new clip's name
  $("error").textContent = message;
  $("error").hidden = false;
  setState("error", "Something went wrong — see the message below.");
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

/** A long file name cut in the middle, so its extension stays visible. */
function shortName(name, limit = MAX_NAME_CHARS) {
  if (name.length <= limit) return name;
  const dot = name.lastIndexOf(".");
  const ext = dot > 0 && name.length - dot <= 8 ? name.slice(dot) : "";
  const keep = limit - ext.length - 1;
  const head = Math.ceil(keep * 0.7);
  return name.slice(0, head) + "\u2026" + name.slice(name.length - ext.length - (keep - head), name.length);
}

// 16-bit PCM samples of a WAV made by encodeWav (44-byte header) as floats, for drawing.
function wavSamples(wav) {
  const view = new DataView(wav.buffer, wav.byteOffset, wav.byteLength);
  const n = Math.floor((wav.byteLength - 44) / 2);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = view.getInt16(44 + 2 * i, true) / 32768;
  return out;
}

async function classify(body, name, samples) {
  const shown = shortName(name);
  setState("classifying", `Classifying ${shown}…`);
  let response;
  try {
    // relative: the page also works under a path prefix (Colab's port proxy, jupyter-server-proxy)
    response = await fetch("predict", { method: "POST", body });
  } catch (err) {
    showError(`The server could not be reached (${err.message}). Is \`asit serve\` still running?`);
    return;
  }
  const text = await response.text();
  let data = null;
  try {
    data = JSON.parse(text);
  } catch (_err) {
    data = null; // a proxy's or an old server's plain-text error
  }
  if (!response.ok || !data) {
    const reason = data && data.error ? data.error : text.split("\n")[0] || response.statusText;
    // the server's message usually names the file already: say it once
    const who = reason.includes(name) || reason.includes(shown) ? "" : `${shown}: `;
    showError(`${who}the server answered ${response.status}: ${reason}`);
    return;
  }
  render(data, samples);
  setState("done", `Classified ${shown} in ${Math.round(data.latency_ms)} ms.`);
}

function meanOverHeads(weights, frames) {
  if (!weights || !weights.length) return [];
  const out = new Array(frames).fill(0);
  for (const head of weights) for (let j = 0; j < frames; j++) out[j] += head[j] / weights.length;
  return out;
}

function render(data, samples) {
  $("result").hidden = false;
  $("result-label").textContent = data.no_event ? NO_EVENT : data.label;
  $("result-score").textContent = data.no_event
    ? `(the model's best guess: ${data.label} ${(data.score * 100).toFixed(1)}%)`
    : `${(data.score * 100).toFixed(1)}%`;
  const nWin = data.windows.length;
  $("result-meta").textContent =
    `${data.duration_s.toFixed(2)} s · ${nWin} window${nWin === 1 ? "" : "s"} · ${Math.round(data.latency_ms)} ms on the server`;
  const steady = $("result-steady");
  steady.hidden = !(data.steady && !data.no_event);  // one sound throughout, or background only: the model's answer
  const how = $("result-aggregation");
  how.hidden = !(nWin > 1 && data.aggregation_how);
  how.textContent = nWin > 1 && data.aggregation_how
    ? `The headline combines ${nWin} windows (${data.aggregation}): ${data.aggregation_how}.` : "";

  const topk = $("topk");
  topk.replaceChildren();
  for (const { label, score } of data.top_k) {
    const name = document.createElement("span");
    name.textContent = label;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${Math.max(0.5, score * 100)}%`;
    track.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(score * 100).toFixed(1)}%`;
    topk.append(name, track, pct);
  }
  const times = data.frame_times_s || [];
  drawAttention($("wave"), {
    startS: 0,
    endS: data.duration_s || 1,
    samples,
    frameTimes: times,
    attention: meanOverHeads(data.weights, times.length),
    windows: data.windows,
  });
  renderWindows(data.windows);
}

function renderWindows(windows) {
  const box = $("windows");
  box.replaceChildren();
  if (windows.length < 2) return;
  const table = document.createElement("table");
  const head = document.createElement("thead");
  const hr = document.createElement("tr");
  for (const text of ["window", "time", "label", "score", "weight in the answer"]) {
    const th = document.createElement("th");
    th.textContent = text;
    hr.append(th);
  }
  head.append(hr);
  const body = document.createElement("tbody");
  windows.forEach((w, k) => {
    const tr = document.createElement("tr");
    const weight = w.evidence === undefined ? "" : `${(w.evidence * 100).toFixed(1)}%`;
    for (const text of [`${k + 1}`, `${w.start_s.toFixed(1)}–${w.end_s.toFixed(1)} s`, w.label,
      `${(w.score * 100).toFixed(1)}%`, weight]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    body.append(tr);
  });
  table.append(head, body);
  box.append(table);
}

function play(blob) {
  const player = $("player");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(blob);
  player.hidden = false;
}

$("file-input").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  clearError();
  clearResult();
  $("file-name").textContent = shortName(file.name);
  $("file-name").title = file.name;
  play(file);
  // The original file goes to the server (it decodes WAV/FLAC/OGG/MP3 itself); the browser's 16 kHz copy is only
  // for drawing, and a file the browser cannot decode is still classified, just without a waveform.
  let samples = null;
  try {
    samples = wavSamples(await toWav16kMono(file));
  } catch (_err) {
    samples = null;
  }
  const form = new FormData();
  form.append("file", file, file.name);
  await classify(form, file.name, samples);
  event.target.value = ""; // choosing the same file again classifies it again
});

$("record-button").addEventListener("click", async () => {
  clearError();
  try {
    recording = await startRecording();
  } catch (err) {
    showError(err.message);
    return;
  }
  $("record-button").disabled = true;
  $("stop-button").disabled = false;
  const started = performance.now();
  setState("recording", "Recording… press Stop when done.");
  meterTimer = setInterval(() => {
    const seconds = (performance.now() - started) / 1000;
    $("level").value = recording ? recording.level() : 0;
    $("rec-time").textContent = `${seconds.toFixed(1)} s`;
    if (seconds >= MAX_RECORD_SECONDS) $("stop-button").click();
  }, 100);
});

$("stop-button").addEventListener("click", async () => {
  if (!recording) return;
  const rec = recording;
  recording = null;
  clearInterval(meterTimer);
  $("stop-button").disabled = true;
  $("record-button").disabled = false;
  $("level").value = 0;
  clearResult();
  setState("encoding", "Encoding the recording as 16 kHz WAV…");
  let wav;
  try {
    wav = await rec.stop();
  } catch (err) {
    showError(err.message);
    return;
  }
  const blob = new Blob([wav], { type: "audio/wav" });
  play(blob);
  await classify(blob, "the recording", wavSamples(wav));
});

// ------------------------------------------------------------------------------------------------------------------
// Listen
// ------------------------------------------------------------------------------------------------------------------

/** What the page shows while listening; window.asitListen for tests and the curious (read only). */
const live = { listener: null, timeline: null, levels: [], info: null, last: null, frame: 0 };
window.asitListen = live;

function listenState(state, message) {
  document.body.dataset.listen = state;
  if (message !== undefined) $("listen-status").textContent = message;
  $("listen-button").disabled = state === "starting" || state === "listening";
  $("listen-stop").disabled = state !== "listening";
}

function listenError(message) {
  $("listen-error").textContent = message;
  $("listen-error").hidden = false;
}

function showUpdates(updates, answer) {
  for (const u of updates) live.timeline.add(u);
  live.last = answer;
  const rate = answer.updates_per_s === undefined ? "" : `${answer.updates_per_s.toFixed(1)} updates/s`;
  const dropped = answer.dropped_hops ? ` · ${answer.dropped_hops} hop${answer.dropped_hops === 1 ? "" : "s"} ` +
    "dropped (the model is slower than real time)" : " · 0 hops dropped";
  $("listen-rate").textContent = rate + dropped;
  const u = updates[updates.length - 1];
  if (!u) return;
  $("listen-label").textContent = u.no_event ? NO_EVENT : u.label;
  $("listen-label").className = u.no_event ? "muted" : "";
  $("listen-score").textContent = u.no_event ? "" : `${(u.score * 100).toFixed(0)}%`;
  $("listen-reason").textContent = u.no_event ? (u.no_event_reason || "") : "";
  $("listen-window").textContent = `(${u.window_start_s.toFixed(1)}–${u.t_end_s.toFixed(1)} s of this session; ` +
    `classified in ${Math.round(u.classify_ms)} ms)`;
  if (!live.frame) live.frame = requestAnimationFrame(drawListen); // at most one redraw per animation frame
}

function drawListen() {
  live.frame = 0;
  if (!live.timeline) return;
  drawListening($("timeline"), $("listen-wave"), live.timeline, { waveHeight: 180 });
}

$("listen-button").addEventListener("click", async () => {
  if (live.listener) return;
  $("listen-error").hidden = true;
  listenState("starting", "Asking for the microphone…");
  live.levels = [];
  try {
    const listener = await startListening({
      transport: httpLiveTransport("live"),
      workletUrl: "static/capture-worklet.js",
      onUpdates: showUpdates,
      onSent: (chunk, startS) => { // levels of the audio the server got (64 ms blocks), on the session's clock
        for (let a = 0; a < chunk.length; a += 1024) {
          const block = chunk.subarray(a, a + 1024);
          let sum = 0;
          for (let i = 0; i < block.length; i++) sum += block[i] * block[i];
          live.levels.push([startS + a / 16000, block.length / 16000, Math.sqrt(sum / block.length)]);
        }
        if (live.levels.length > 20000) live.levels.splice(0, live.levels.length - 20000); // ~20 min: bounded
      },
      onError: (message) => {
        live.listener = null;
        clearInterval(live.meter);
        $("listen-level").value = 0;
        listenError(message);
        listenState("error", "Listening stopped.");
      },
    });
    live.listener = listener;
    live.info = listener.info;
    live.timeline = new Timeline({ labels: listener.info.labels });
  } catch (err) {
    listenError(err.message);
    listenState("error", "Not listening.");
    return;
  }
  const { hop_s: hop, window_s: win } = live.info;
  $("listen-how").textContent = `The microphone streams to this server; every ${hop} s it classifies the last ` +
    `${win} s (${live.listener.microphone.capture}, ${live.listener.microphone.contextRate} Hz capture` +
    `${live.listener.microphone.resampled ? ", resampled to 16 kHz here" : ""}). Nothing is sent after Stop.`;
  listenState("listening", "Listening… press Stop to end.");
  live.meter = setInterval(() => {
    $("listen-level").value = live.listener ? live.listener.level() : 0;
  }, 100);
});

$("listen-stop").addEventListener("click", async () => {
  const listener = live.listener;
  if (!listener) return;
  live.listener = null;
  clearInterval(live.meter);
  $("listen-level").value = 0;
  const summary = await listener.stop();
  const s = listener.stats();
  live.stopped = s;
  listenState("stopped", `Stopped. ${s.chunks} chunks (${(s.sentSamples / 16000).toFixed(1)} s of audio) sent, ` +
    `${s.updates} updates${summary && summary.dropped_hops ? `, ${summary.dropped_hops} hops dropped` : ""}.`);
});

setState("idle");
listenState("idle");
