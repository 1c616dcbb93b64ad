// The browser half of asit_helpers.widgets.Listener (an anywidget): Listen / Stop, the scrolling timeline and the
// attention curve of the latest window, drawn by the same code as the web page's Listen mode.
//
// widgets.py puts asit_helpers/static/recorder.js (the one browser module shared with `asit serve`) in front of
// this file, so startListening, Timeline, drawListening and widgetControls are in scope. The page sends its chunks
// over HTTP; here they go to the kernel as custom messages, one in flight at most (startListening's rule):
//   {event: "listen-open", id}                   -> {reply: id, ok, body: session description | error}
//   {event: "listen-audio", id, seq} + [f32le]    -> {reply: id, ok, body: {updates, dropped_hops, ...} | error}
//   {event: "listen-close", id}                  -> {reply: id, ok, body: final counters}
//   {event: "error", message}                    the microphone was refused / missing / lost (Python shows it)

/** startListening's transport over the widget's comm. */
function commTransport(model) {
  const waiting = new Map();
  let nextId = 0;
  const onMessage = (msg) => {
    if (!msg || msg.reply === undefined || !waiting.has(msg.reply)) return;
    const { resolve, reject } = waiting.get(msg.reply);
    waiting.delete(msg.reply);
    if (msg.ok) resolve(msg.body);
    else reject(Object.assign(new Error(msg.error || "the kernel refused the chunk"), { ended: msg.ended !== false }));
  };
  model.on("msg:custom", onMessage);
  const call = (content, buffers) => new Promise((resolve, reject) => {
    const id = nextId++;
    waiting.set(id, { resolve, reject });
    model.send({ ...content, id }, undefined, buffers);
  });
  return {
    kind: "comm",
    open: () => call({ event: "listen-open" }),
    send: (samples, seq) => call({ event: "listen-audio", seq },
      [samples.buffer.slice(samples.byteOffset, samples.byteOffset + samples.byteLength)]),
    abort() {
      for (const { reject } of waiting.values()) reject(Object.assign(new Error("stopped"), { ended: false }));
      waiting.clear();
    },
    close: () => call({ event: "listen-close" }).catch(() => null),
    dispose: () => model.off("msg:custom", onMessage),
  };
}

function render({ model, el }) {
  const rate = element("span", "asit-rate", "");
  const { root, start: listen, stop, bar, show } = widgetControls({
    rootClass: "asit-listen", startClass: "asit-listen-start", startText: "\u25C9 Listen", stopClass: "asit-listen-stop",
    hint: "Click Listen and allow the microphone: the timeline shows what the model hears.", extra: [rate],
  });
  const now = element("div", "asit-now", "");
  const reason = element("div", "asit-reason", "");
  const timelineCanvas = element("canvas", "asit-timeline");
  const waveTitle = element("div", "asit-caption", "");
  const waveCanvas = element("canvas", "asit-wave");
  root.append(now, reason, timelineCanvas, waveTitle, waveCanvas);
  el.appendChild(root);

  let listener = null;
  let timeline = null;
  let ticker = null;
  let frame = 0;
  const transport = commTransport(model);
  const idle = () => {
    if (ticker !== null) clearInterval(ticker);
    ticker = null;
    bar.style.width = "0%";
    listen.disabled = false;
    stop.disabled = true;
  };
  const draw = () => {
    frame = 0;
    if (!timeline) return;
    const u = drawListening(timelineCanvas, waveCanvas, timeline, { rows: 5, waveHeight: 160 });
    if (!u) return;
    waveTitle.textContent = `Latest window, ${u.window_start_s.toFixed(1)}\u2013${u.t_end_s.toFixed(1)} s: attention ` +
      "as a multiple of uniform (dashed: every frame the same)";
  };
  const onUpdates = (updates, answer) => {
    for (const u of updates) timeline.add(u);
    rate.textContent = `${(answer.updates_per_s || 0).toFixed(1)} updates/s \u00b7 ${answer.dropped_hops || 0} hops dropped`;
    const u = updates[updates.length - 1];
    if (u) {
      now.textContent = u.no_event ? NO_EVENT : `${u.label} ${(u.score * 100).toFixed(0)}%`;
      now.dataset.noEvent = u.no_event ? "1" : "0";
      reason.textContent = u.no_event ? u.no_event_reason || "" : "";
    }
    if (!frame) frame = requestAnimationFrame(draw);
  };
  const fail = (message) => {
    listener = null;
    idle();
    show(message, "error");
    model.send({ event: "error", message });
  };

  listen.addEventListener("click", async () => {
    if (listener) return;
    listen.disabled = true;
    show("Asking for the microphone\u2026");
    try {
      listener = await startListening({
        transport, workletSource: model.get("worklet_source"), onUpdates, onError: fail,
      });
    } catch (err) {
      fail(err && err.message ? err.message : String(err));
      return;
    }
    timeline = new Timeline({ labels: listener.info.labels });
    el.__asitListen = { timeline, listener }; // for tests and the curious (read only)
    stop.disabled = false;
    show(`Listening: every ${listener.info.hop_s} s the kernel classifies the last ${listener.info.window_s} s ` +
      `(${listener.microphone.capture}, ${listener.microphone.contextRate} Hz capture). Click Stop to end.`, "listening");
    ticker = setInterval(() => {
      if (listener) bar.style.width = `${Math.round(listener.level() * 100)}%`;
    }, 100);
  });
  stop.addEventListener("click", async () => {
    if (!listener) return;
    const current = listener;
    listener = null;
    idle();
    await current.stop();
    const s = current.stats();
    show(`Stopped: ${s.chunks} chunks (${(s.sentSamples / 16000).toFixed(1)} s of audio) sent, ${s.updates} updates. ` +
      "Nothing is sent after Stop.", "stopped");
  });

  return () => {
    if (listener) listener.stop();
    listener = null;
    idle();
    transport.dispose();
  };
}

export default { render };
