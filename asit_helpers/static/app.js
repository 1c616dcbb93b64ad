// The ASiT page: upload or record a clip, POST it to /predict, draw the top-k chart and the attention curve
// over the waveform. Plain JS, no dependencies; recording and WAV encoding come from the shared recorder.js.
import { startRecording, toWav16kMono } from "./recorder.js";

const $ = (id) => document.getElementById(id);
const MAX_RECORD_SECONDS = 30; // a recording stops by itself; longer audio is better uploaded as a file

let recording = null; // controller from startRecording
let meterTimer = 0;

function setState(state, message) {
  document.body.dataset.state = state;
  if (message !== undefined) $("status").textContent = message;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  setState("error", "Something went wrong — see the message below.");
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
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
  setState("classifying", `Classifying ${name}…`);
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
    data = null; // e.g. waitress's own plain-text 413 for an upload over the size limit
  }
  if (!response.ok || !data) {
    const reason = data && data.error ? data.error : text.split("\n")[0] || response.statusText;
    showError(`${name}: the server answered ${response.status}: ${reason}`);
    return;
  }
  render(data, samples);
  setState("done", `Classified ${name} in ${Math.round(data.latency_ms)} ms.`);
}

function render(data, samples) {
  $("result").hidden = false;
  $("result-label").textContent = data.label;
  $("result-score").textContent = `${(data.score * 100).toFixed(1)}%`;
  const nWin = data.windows.length;
  $("result-meta").textContent =
    `${data.duration_s.toFixed(2)} s · ${nWin} window${nWin === 1 ? "" : "s"} · ${Math.round(data.latency_ms)} ms on the server`;

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
  drawWave($("wave"), samples, data);
  renderWindows(data.windows, data.aggregation_how);
}

function renderWindows(windows, how) {
  const box = $("windows");
  box.replaceChildren();
  if (windows.length < 2) return;
  if (how) {  // say how the windows became one answer (predict's aggregation)
    const note = document.createElement("p");
    note.className = "aggregation";
    note.textContent = `The clip's answer: ${how}.`;
    box.append(note);
  }
  const table = document.createElement("table");
  table.innerHTML = "<thead><tr><th>window</th><th>label</th><th>score</th><th>weight in the answer</th></tr></thead>";
  const body = document.createElement("tbody");
  for (const w of windows) {
    const tr = document.createElement("tr");
    const weight = w.evidence === undefined ? "" : `${(w.evidence * 100).toFixed(1)}%`;
    for (const text of [`${w.start_s.toFixed(1)}–${w.end_s.toFixed(1)} s`, w.label, `${(w.score * 100).toFixed(1)}%`, weight]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    body.append(tr);
  }
  table.append(body);
  box.append(table);
}

function drawWave(canvas, samples, data) {
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();
  const dpr = window.devicePixelRatio || 1;
  const cssWidth = canvas.clientWidth || 900;
  const cssHeight = 220;
  canvas.width = Math.round(cssWidth * dpr);
  canvas.height = Math.round(cssHeight * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssWidth, cssHeight);
  const duration = data.duration_s || 1;
  const x = (t) => (t / duration) * cssWidth;
  const mid = cssHeight / 2;

  // Waveform: min/max of the samples under each pixel column (absent when the browser could not decode the file).
  if (samples && samples.length) {
    ctx.fillStyle = color("--wave");
    const perPx = samples.length / cssWidth;
    for (let px = 0; px < cssWidth; px++) {
      let lo = 0, hi = 0;
      const end = Math.min(samples.length, Math.floor((px + 1) * perPx));
      for (let i = Math.floor(px * perPx); i < end; i++) {
        if (samples[i] < lo) lo = samples[i];
        if (samples[i] > hi) hi = samples[i];
      }
      ctx.fillRect(px, mid - hi * mid * 0.95, 1, Math.max(1, (hi - lo) * mid * 0.95));
    }
  }

  // Attention: mean over heads, scaled so its peak reaches the top.
  const heads = data.weights || [];
  const times = data.frame_times_s || [];
  let points = 0;
  if (heads.length && times.length) {
    const mean = times.map((_, j) => heads.reduce((s, h) => s + h[j], 0) / heads.length);
    const peak = Math.max(...mean) || 1;
    ctx.strokeStyle = color("--attention");
    ctx.lineWidth = 2;
    ctx.beginPath();
    mean.forEach((w, j) => {
      const px = x(times[j]);
      const py = cssHeight - 4 - (w / peak) * (cssHeight - 12);
      if (j === 0) ctx.moveTo(px, py);
      else ctx.lineTo(px, py);
      points++;
    });
    ctx.stroke();
  }
  // Window boundaries of long audio.
  if (data.windows && data.windows.length > 1) {
    ctx.strokeStyle = color("--border");
    ctx.lineWidth = 1;
    for (const w of data.windows.slice(1)) {
      ctx.beginPath();
      ctx.moveTo(x(w.start_s), 0);
      ctx.lineTo(x(w.start_s), cssHeight);
      ctx.stroke();
    }
  }
  canvas.dataset.attentionPoints = String(points);
  canvas.dataset.wavePoints = String(samples ? samples.length : 0);
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
  $("file-name").textContent = file.name;
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

setState("idle");
