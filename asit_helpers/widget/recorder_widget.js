// The browser half of asit_helpers.widgets.Recorder (an anywidget).
//
// widgets.py puts asit_helpers/static/recorder.js (the one recorder shared with `asit serve`) in front of this
// file, so startRecording() and widgetControls() are in scope here. The browser records, converts the clip to
// 16 kHz mono WAV and sends the bytes to Python as a binary buffer of a custom message:
//   {event: "audio", name, seconds} + [WAV bytes]    a finished recording
//   {event: "error", message}                         the microphone was refused / missing, or the clip empty
// Python classifies the clip and shows the result in widgets of its own; this view only owns the buttons,
// the level meter and a status line.

function render({ model, el }) {
  const clock = element("span", "asit-clock", "");
  const { root, start: record, stop, bar, show } = widgetControls({
    rootClass: "asit-recorder", startClass: "asit-record", startText: "\u25CF Record", stopClass: "asit-stop",
    hint: "Click Record, make a sound, then Stop.", extra: [clock],
  });
  el.appendChild(root);

  let controller = null;
  let ticker = null;
  let startedAt = 0;

  const reportError = (message) => {
    show(message, "error");
    model.send({ event: "error", message });
  };
  const stopTicker = () => {
    if (ticker !== null) clearInterval(ticker);
    ticker = null;
    bar.style.width = "0%";
  };

  async function finish() {
    if (!controller) return;
    const current = controller;
    controller = null;
    stopTicker();
    stop.disabled = true;
    const seconds = (performance.now() - startedAt) / 1000;
    show("Converting the recording to 16 kHz WAV\u2026");
    try {
      const wav = await current.stop(); // resolves after MediaRecorder's onstop, never on a timer
      model.send({ event: "audio", name: "recording.wav", seconds }, undefined, [wav.buffer]);
      show(`Recorded ${seconds.toFixed(1)} s; classifying in Python\u2026`);
    } catch (err) {
      reportError(err && err.message ? err.message : String(err));
    } finally {
      record.disabled = false;
    }
  }

  record.addEventListener("click", async () => {
    if (controller) return;
    record.disabled = true;
    show("Asking for the microphone\u2026");
    try {
      controller = await startRecording();
    } catch (err) {
      record.disabled = false;
      reportError(err && err.message ? err.message : String(err));
      return;
    }
    startedAt = performance.now();
    stop.disabled = false;
    show("Recording\u2026 click Stop when done.", "recording");
    const limit = Number(model.get("max_seconds")) || 30;
    ticker = setInterval(() => {
      if (!controller) return;
      const elapsed = (performance.now() - startedAt) / 1000;
      clock.textContent = `${elapsed.toFixed(1)} s`;
      bar.style.width = `${Math.round(controller.level() * 100)}%`;
      if (elapsed >= limit) finish(); // the Python side would refuse a longer clip anyway
    }, 100);
  });
  stop.addEventListener("click", finish);

  model.on("change:status", () => {
    if (model.get("status")) show(model.get("status"), "info");
  });

  return () => {
    stopTicker();
    if (controller) controller.cancel();
    controller = null;
  };
}

export default { render };
