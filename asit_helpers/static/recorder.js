// ASiT's one browser module, shared by the web page (asit serve) and the notebook widget: the recorder and WAV
// encoder, live listening (microphone streaming at 16 kHz, chunked sending, the scrolling timeline) and the
// drawing of an attention curve over its waveform.
//
// The browser does all the codec work: whatever MediaRecorder produces (webm/opus, ogg, mp4 -- and headless
// Chromium reports an empty MIME type) is decoded with decodeAudioData, mixed to mono and resampled to 16 kHz
// in an OfflineAudioContext, and encoded as 16-bit PCM WAV. Python then only ever receives plain WAV, which
// load_audio reads without FFmpeg.
//
// Dependency-free ES module (the widget concatenates it in front of its view, so it imports nothing). Interface:
//   startRecording(options)  -> Promise<{ stop(): Promise<Uint8Array>, cancel(): void, level(): number }>
//   toWav16kMono(blobOrArrayBuffer) -> Promise<Uint8Array>
//   encodeWav(float32Samples, sampleRate) -> Uint8Array
//   openMicrophoneStream(options) -> Promise<{ stop(), level(), contextRate, resampled, capture }>   16 kHz blocks
//   createResampler(fromRate, toRate) -> (Float32Array) => Float32Array                              streaming
//   startListening({ transport, onUpdates, onError, ... }) -> Promise<Listener>      one request in flight at most
//   httpLiveTransport(base)  -> the page's transport (POST live, POST live/<id>/audio, DELETE live/<id>)
//   new Timeline({ labels }) / drawTimeline(canvas, timeline, options)        class evidence over the last ~30 s
//   drawAttention(canvas, { envelope | samples, ... })        waveform, time axis, attention against uniform
//   drawListening(timelineCanvas, waveCanvas, timeline)       both, from a live Timeline's latest update

export const TARGET_SAMPLE_RATE = 16000;

// Containers MediaRecorder may produce; the first supported one is asked for. We never trust the resulting
// blob's type (decodeAudioData sniffs the bytes), this only avoids browsers picking something odd.
const PREFERRED_TYPES = ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus", "audio/mp4"];

export function microphoneError(err) {
  const name = err && err.name ? err.name : "";
  if (name === "NotAllowedError" || name === "PermissionDeniedError" || name === "SecurityError") {
    return new Error(
      "Microphone access was refused. Allow the microphone for this page in the browser's site settings " +
        "(or upload a file instead)."
    );
  }
  if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
    return new Error("No microphone was found. Connect one, or upload a file instead.");
  }
  if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
    return new Error("The microphone could not be opened (is another application using it?).");
  }
  return new Error("Could not start the microphone: " + (err && err.message ? err.message : String(err)));
}

/**
 * Ask for the microphone and start recording.
 *
 * @param {object} [options]
 * @param {number} [options.timeslice=250]  ms between MediaRecorder data chunks (so a crash loses little).
 * @param {MediaTrackConstraints|boolean} [options.audio]  getUserMedia audio constraints.
 * @returns {Promise<{stop: () => Promise<Uint8Array>, cancel: () => void, level: () => number}>}
 * @throws {Error} with a human-readable message when the microphone is refused, missing or unsupported.
 */
export async function startRecording(options = {}) {
  if (typeof window !== "undefined" && window.isSecureContext === false) {
    throw new Error(
      "Recording needs a secure page: open it as http://127.0.0.1 / http://localhost or over https."
    );
  }
  if (typeof navigator === "undefined" || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("This browser cannot record audio (no navigator.mediaDevices.getUserMedia).");
  }
  if (typeof MediaRecorder === "undefined") {
    throw new Error("This browser cannot record audio (no MediaRecorder).");
  }
  const constraints = {
    audio: options.audio !== undefined ? options.audio : { channelCount: 1, echoCancellation: false, noiseSuppression: false },
  };
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(constraints);
  } catch (err) {
    throw microphoneError(err);
  }
  const stopTracks = () => stream.getTracks().forEach((t) => t.stop());

  let recorder;
  try {
    const mimeType = PREFERRED_TYPES.find((t) => MediaRecorder.isTypeSupported && MediaRecorder.isTypeSupported(t));
    recorder = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
  } catch (err) {
    stopTracks();
    throw new Error("This browser cannot record audio: " + (err && err.message ? err.message : String(err)));
  }

  // Input level for a meter. Optional: if an AudioContext cannot be made, level() simply reads 0.
  let meterContext = null;
  let analyser = null;
  let meterBuffer = null;
  try {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    meterContext = new Ctx();
    const source = meterContext.createMediaStreamSource(stream);
    analyser = meterContext.createAnalyser();
    analyser.fftSize = 1024;
    meterBuffer = new Float32Array(analyser.fftSize);
    source.connect(analyser); // not connected to the speakers: no feedback
  } catch (_err) {
    analyser = null;
  }
  const closeMeter = () => {
    if (meterContext && meterContext.state !== "closed") meterContext.close().catch(() => {});
  };

  const chunks = [];
  let finished = false;
  recorder.ondataavailable = (e) => {
    if (e.data && e.data.size > 0) chunks.push(e.data);
  };
  // Resolved by onstop (after the last dataavailable), never by a timer: a fixed sleep races the encoder.
  const stopped = new Promise((resolve, reject) => {
    recorder.onstop = () => resolve();
    recorder.onerror = (e) => reject(new Error("Recording failed: " + (e.error ? e.error.message : "unknown error")));
  });
  recorder.start(options.timeslice || 250);

  return {
    async stop() {
      if (finished) throw new Error("This recording was already stopped.");
      finished = true;
      if (recorder.state !== "inactive") recorder.stop();
      try {
        await stopped;
      } finally {
        stopTracks();
        closeMeter();
      }
      if (!chunks.length) throw new Error("The recording is empty (no audio data arrived from the microphone).");
      const type = chunks[0].type || recorder.mimeType || "";
      return toWav16kMono(new Blob(chunks, type ? { type } : {}));
    },
    cancel() {
      if (finished) return;
      finished = true;
      stopped.catch(() => {}); // nobody awaits it after a cancel
      if (recorder.state !== "inactive") recorder.stop();
      stopTracks();
      closeMeter();
    },
    level() {
      if (!analyser || finished) return 0;
      analyser.getFloatTimeDomainData(meterBuffer);
      let sum = 0;
      for (let i = 0; i < meterBuffer.length; i++) sum += meterBuffer[i] * meterBuffer[i];
      const rms = Math.sqrt(sum / meterBuffer.length);
      // Speech sits around RMS 0.05-0.2; sqrt spreads the quiet end so the meter moves visibly.
      return Math.min(1, Math.sqrt(rms * 4));
    },
  };
}

/**
 * Decode any audio the browser understands and return it as 16 kHz mono 16-bit PCM WAV bytes.
 *
 * @param {Blob|ArrayBuffer|Uint8Array} blobOrArrayBuffer  encoded audio (webm, ogg, mp3, wav, ...).
 * @returns {Promise<Uint8Array>}
 * @throws {Error} if the bytes are not audio the browser can decode.
 */
export async function toWav16kMono(blobOrArrayBuffer) {
  let buffer;
  if (typeof Blob !== "undefined" && blobOrArrayBuffer instanceof Blob) {
    buffer = await blobOrArrayBuffer.arrayBuffer();
  } else if (blobOrArrayBuffer instanceof ArrayBuffer) {
    buffer = blobOrArrayBuffer.slice(0); // decodeAudioData detaches its argument: keep the caller's intact
  } else if (ArrayBuffer.isView(blobOrArrayBuffer)) {
    const v = blobOrArrayBuffer;
    buffer = v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength);
  } else {
    throw new Error("toWav16kMono expects a Blob, an ArrayBuffer or a Uint8Array.");
  }
  if (buffer.byteLength === 0) throw new Error("The audio is empty (0 bytes).");

  const Offline = window.OfflineAudioContext || window.webkitOfflineAudioContext;
  // decodeAudioData on a 16 kHz context already resamples; the render below mixes the channels to mono.
  const decoder = new Offline(1, 1, TARGET_SAMPLE_RATE);
  let decoded;
  try {
    decoded = await decoder.decodeAudioData(buffer);
  } catch (err) {
    throw new Error("The browser could not decode this audio (" + (err && err.message ? err.message : err) + ").");
  }
  const frames = Math.max(1, Math.ceil(decoded.duration * TARGET_SAMPLE_RATE));
  const mixer = new Offline(1, frames, TARGET_SAMPLE_RATE);
  const src = mixer.createBufferSource();
  src.buffer = decoded;
  src.connect(mixer.destination); // channel count 1 with "speakers" interpretation: (L + R) / 2
  src.start(0);
  const rendered = await mixer.startRendering();
  return encodeWav(rendered.getChannelData(0), TARGET_SAMPLE_RATE);
}

/**
 * Encode mono float samples (-1..1; clipped) as a RIFF/WAVE 16-bit PCM file.
 *
 * @param {Float32Array|number[]} float32Samples  shape (samples,)
 * @param {number} sampleRate  Hz
 * @returns {Uint8Array}  44-byte header + 2 bytes per sample
 */
export function encodeWav(float32Samples, sampleRate) {
  const n = float32Samples.length;
  const out = new ArrayBuffer(44 + n * 2);
  const view = new DataView(out);
  const ascii = (offset, text) => {
    for (let i = 0; i < text.length; i++) view.setUint8(offset + i, text.charCodeAt(i));
  };
  ascii(0, "RIFF");
  view.setUint32(4, 36 + n * 2, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  view.setUint32(16, 16, true); // fmt chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, sampleRate * 2, true); // byte rate
  view.setUint16(32, 2, true); // block align
  view.setUint16(34, 16, true); // bits per sample
  ascii(36, "data");
  view.setUint32(40, n * 2, true);
  for (let i = 0, pos = 44; i < n; i++, pos += 2) {
    const s = Math.max(-1, Math.min(1, float32Samples[i] || 0)); // NaN -> 0
    view.setInt16(pos, s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff), true);
  }
  return new Uint8Array(out);
}

// ------------------------------------------------------------------------------------------------------------------
// Live listening: the microphone as a stream of 16 kHz mono float32 blocks
// ------------------------------------------------------------------------------------------------------------------

function checkMicrophoneApi() {
  if (typeof window !== "undefined" && window.isSecureContext === false) {
    throw new Error("Listening needs a secure page: open it as http://127.0.0.1 / http://localhost or over https.");
  }
  if (typeof navigator === "undefined" || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("This browser cannot use a microphone (no navigator.mediaDevices.getUserMedia).");
  }
  if (!(window.AudioContext || window.webkitAudioContext)) {
    throw new Error("This browser cannot process audio (no AudioContext).");
  }
}

/**
 * A streaming windowed-sinc resampler (mono). Each call takes the next input block and returns the output samples
 * it completes; a block's last few output samples come with the next call (the filter needs the samples after).
 *
 * @param {number} fromRate  input rate, Hz
 * @param {number} toRate  output rate, Hz
 * @param {number} [halfTaps=16]  filter half-length in input samples (32 taps: ~60 dB stop band is plenty here)
 * @returns {(input: Float32Array) => Float32Array}
 */
export function createResampler(fromRate, toRate, halfTaps = 16) {
  const step = fromRate / toRate; // input samples per output sample
  const cutoff = Math.min(1, toRate / fromRate) * 0.92; // below the output Nyquist: no aliasing into speech bands
  const width = halfTaps * Math.max(1, step);
  let held = new Float32Array(0); // input not yet fully consumed
  let pos = 0; // input position of the next output sample, relative to held[0]
  const kernel = (d) => {
    const x = d * cutoff;
    const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
    const hann = 0.5 + 0.5 * Math.cos((Math.PI * d) / width);
    return Math.abs(d) >= width ? 0 : sinc * hann;
  };
  return (input) => {
    const merged = new Float32Array(held.length + input.length);
    merged.set(held);
    merged.set(input, held.length);
    const out = [];
    while (pos + width < merged.length) {
      let acc = 0;
      let norm = 0;
      for (let i = Math.max(0, Math.ceil(pos - width)); i <= Math.min(merged.length - 1, Math.floor(pos + width)); i++) {
        const w = kernel(i - pos);
        acc += merged[i] * w;
        norm += w;
      }
      out.push(norm ? acc / norm : 0); // unit gain at DC
      pos += step;
    }
    const keep = Math.max(0, Math.floor(pos - width) - 1);
    held = merged.slice(keep);
    pos -= keep;
    return Float32Array.from(out);
  };
}

/**
 * Ask for the microphone and stream it as 16 kHz mono float32 blocks.
 *
 * The AudioContext is asked to run at 16 kHz (the browser then resamples); where it refuses (Firefox will not
 * connect a microphone to a context at another rate), it runs at the device rate and createResampler converts.
 * Capture runs in an AudioWorklet (options.workletUrl: a module URL the page's CSP allows, or workletSource: the
 * same module's text, loaded from a blob: URL), else in a ScriptProcessorNode.
 *
 * @param {object} options
 * @param {(samples: Float32Array) => void} options.onSamples  each 16 kHz block, in order
 * @param {(message: string) => void} [options.onEnded]  the microphone went away (unplugged, revoked)
 * @param {string} [options.workletUrl]
 * @param {string} [options.workletSource]
 * @returns {Promise<{stop: () => void, level: () => number, contextRate: number, resampled: boolean, capture: string}>}
 */
export async function openMicrophoneStream(options) {
  checkMicrophoneApi();
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (err) {
    throw microphoneError(err);
  }
  const Ctx = window.AudioContext || window.webkitAudioContext;
  let context = null;
  let source = null;
  try {
    context = new Ctx({ sampleRate: TARGET_SAMPLE_RATE });
    source = context.createMediaStreamSource(stream);
  } catch (_err) {
    if (context) context.close().catch(() => {});
    context = new Ctx(); // the device's own rate; resampled below
    source = context.createMediaStreamSource(stream);
  }
  const resample = context.sampleRate === TARGET_SAMPLE_RATE ? null : createResampler(context.sampleRate, TARGET_SAMPLE_RATE);
  let stopped = false;
  let lastRms = 0;
  const deliver = (block) => {
    if (stopped) return;
    const samples = resample ? resample(block) : block;
    let sum = 0;
    for (let i = 0; i < block.length; i++) sum += block[i] * block[i];
    lastRms = Math.sqrt(sum / Math.max(1, block.length));
    if (samples.length) options.onSamples(samples);
  };

  const sink = context.createGain();
  sink.gain.value = 0; // the graph must reach the destination to be pulled; nothing is heard
  sink.connect(context.destination);
  let node = null;
  let capture = "";
  const workletUrl = options.workletUrl ||
    (options.workletSource ? URL.createObjectURL(new Blob([options.workletSource], { type: "text/javascript" })) : "");
  if (workletUrl && context.audioWorklet && typeof AudioWorkletNode !== "undefined") {
    try {
      await context.audioWorklet.addModule(workletUrl);
      node = new AudioWorkletNode(context, "asit-capture", { numberOfOutputs: 1 });
      node.port.onmessage = (event) => deliver(event.data);
      capture = "AudioWorklet";
    } catch (_err) {
      node = null; // e.g. a Content-Security-Policy that refuses the module: the older node still works
    }
  }
  if (!node) {
    node = context.createScriptProcessor(2048, 1, 1);
    node.onaudioprocess = (event) => deliver(event.inputBuffer.getChannelData(0).slice(0));
    capture = "ScriptProcessor";
  }
  source.connect(node);
  node.connect(sink);
  if (context.state === "suspended") await context.resume();

  const stop = () => {
    if (stopped) return;
    stopped = true;
    if (node.port) node.port.postMessage("stop");
    node.onaudioprocess = null;
    if (node.port) node.port.onmessage = null;
    try {
      source.disconnect();
      node.disconnect();
    } catch (_err) {
      /* already disconnected */
    }
    stream.getTracks().forEach((t) => t.stop());
    if (context.state !== "closed") context.close().catch(() => {});
  };
  for (const track of stream.getAudioTracks()) {
    track.addEventListener("ended", () => {
      if (stopped) return;
      stop();
      if (options.onEnded) options.onEnded("The microphone stopped (unplugged, or access was withdrawn). Listening ended.");
    });
  }
  return {
    stop,
    level: () => (stopped ? 0 : Math.min(1, Math.sqrt(lastRms * 4))),
    contextRate: context.sampleRate,
    resampled: resample !== null,
    capture,
  };
}

// ------------------------------------------------------------------------------------------------------------------
// Live listening: sending chunks, at most one in flight
// ------------------------------------------------------------------------------------------------------------------

async function readJson(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch (_err) {
    return { error: text.split("\n")[0] || response.statusText, status: response.status };
  }
}

/**
 * The page's transport to `asit serve`'s live API (relative URLs: the page also works under a path prefix).
 *
 * @param {string} [base="live"]
 * @param {{hopS?: number}} [options]
 */
export function httpLiveTransport(base = "live", options = {}) {
  let info = null;
  let inFlight = null; // AbortController of the audio request in flight
  const failure = (data, response) => {
    const err = new Error(data.error || `the server answered ${response.status}`);
    err.status = response.status;
    err.ended = data.ended !== false; // 404/400/413/422 end the session; 409 says ended: false
    return err;
  };
  return {
    kind: "http",
    async open() {
      const body = options.hopS ? JSON.stringify({ hop_s: options.hopS }) : "{}";
      let response;
      try {
        response = await fetch(base, { method: "POST", headers: { "Content-Type": "application/json" }, body });
      } catch (err) {
        throw new Error(`The server could not be reached (${err.message}). Is \`asit serve\` still running?`);
      }
      const data = await readJson(response);
      if (!response.ok) throw failure(data, response);
      info = data;
      return data;
    },
    async send(samples, seq) {
      inFlight = new AbortController();
      try {
        const response = await fetch(`${base}/${encodeURIComponent(info.session)}/audio?seq=${seq}`, {
          method: "POST",
          headers: { "Content-Type": "application/octet-stream" },
          body: samples.buffer.slice(samples.byteOffset, samples.byteOffset + samples.byteLength),
          signal: inFlight.signal,
        });
        const data = await readJson(response);
        if (!response.ok) throw failure(data, response);
        return data;
      } finally {
        inFlight = null;
      }
    },
    abort() {
      if (inFlight) inFlight.abort();
    },
    async close() {
      if (!info) return null;
      const id = info.session;
      info = null;
      try {
        const response = await fetch(`${base}/${encodeURIComponent(id)}`, { method: "DELETE", keepalive: true });
        return await readJson(response);
      } catch (_err) {
        return null; // the server is gone: the session expires there by itself
      }
    },
  };
}

/**
 * Listen: stream the microphone to a transport and hand every answer's updates to onUpdates.
 *
 * At most one chunk is in flight; audio captured meanwhile joins the next chunk, so a model slower than real time
 * makes chunks bigger (the server then drops hops) instead of queueing requests. After stop() nothing more is
 * captured, queued or sent except the one request that ends the session.
 *
 * @param {object} o
 * @param {{open: Function, send: Function, abort: Function, close: Function}} o.transport
 * @param {(updates: object[], answer: object) => void} o.onUpdates
 * @param {(message: string) => void} o.onError  listening ended because of an error (already stopped)
 * @param {(samples: Float32Array, startS: number) => void} [o.onSent]  each chunk as it is sent (session time)
 * @param {string} [o.workletUrl]  @param {string} [o.workletSource]  see openMicrophoneStream
 * @returns {Promise<{info: object, stop: () => Promise<object>, level: () => number, stats: () => object,
 *   microphone: object}>}
 */
export async function startListening(o) {
  const info = await o.transport.open(); // a refusal (e.g. too many listeners) is thrown before the microphone opens
  const maxChunk = Math.floor((info.max_chunk_s || 2.0) * TARGET_SAMPLE_RATE);
  const minChunk = Math.floor(Math.min(0.25, (info.hop_s || 0.5) / 2) * TARGET_SAMPLE_RATE);
  const maxPending = Math.max(maxChunk, Math.floor(10 * TARGET_SAMPLE_RATE)); // a stalled server: keep 10 s at most
  const stats = { chunks: 0, sentSamples: 0, droppedSamples: 0, answers: 0, busy: 0, updates: 0 };
  let pending = [];
  let pendingSamples = 0;
  let seq = 0;
  let sending = false;
  let stopped = false;
  let last = null;

  const fail = async (message) => {
    if (stopped) return;
    await stop();
    o.onError(message);
  };
  const takeChunk = () => {
    const n = Math.min(pendingSamples, maxChunk);
    const chunk = new Float32Array(n);
    let filled = 0;
    while (filled < n) {
      const head = pending[0];
      const take = Math.min(head.length, n - filled);
      chunk.set(head.subarray(0, take), filled);
      filled += take;
      if (take === head.length) pending.shift();
      else pending[0] = head.subarray(take);
    }
    pendingSamples -= n;
    return chunk;
  };
  const pump = async () => {
    if (sending || stopped || pendingSamples < minChunk) return;
    sending = true;
    const chunk = takeChunk();
    const startS = stats.sentSamples / TARGET_SAMPLE_RATE;
    stats.chunks++;
    stats.sentSamples += chunk.length;
    if (o.onSent) o.onSent(chunk, startS);
    try {
      const answer = await o.transport.send(chunk, seq++);
      if (stopped) return; // an answer that arrives after Stop is not shown
      last = answer;
      stats.answers++;
      if (answer.busy) stats.busy++;
      stats.updates += (answer.updates || []).length;
      o.onUpdates(answer.updates || [], answer);
    } catch (err) {
      if (!stopped) await fail(err.ended === false ? err.message : `Listening ended: ${err.message}`);
      return;
    } finally {
      sending = false;
    }
    pump();
  };
  const microphone = await openMicrophoneStream({
    workletUrl: o.workletUrl,
    workletSource: o.workletSource,
    onEnded: (message) => fail(message),
    onSamples: (samples) => {
      if (stopped) return; // nothing is kept once stopped (the stream is already closed)
      pending.push(samples);
      pendingSamples += samples.length;
      while (pendingSamples > maxPending) { // drop the oldest audio rather than fall ever further behind
        const head = pending.shift();
        pendingSamples -= head.length;
        stats.droppedSamples += head.length;
      }
      pump();
    },
  }).catch(async (err) => {
    await o.transport.close();
    throw err;
  });

  async function stop() {
    if (stopped) return last;
    stopped = true;
    microphone.stop();
    pending = [];
    pendingSamples = 0;
    o.transport.abort();
    return o.transport.close();
  }
  return {
    info,
    microphone,
    stop,
    level: () => microphone.level(),
    stats: () => ({ ...stats, pendingSamples, stopped, last }),
  };
}

// ------------------------------------------------------------------------------------------------------------------
// The timeline: which class when, from each update's probabilities and attention
// ------------------------------------------------------------------------------------------------------------------

/** The word shown where a window says nothing happened. */
export const NO_EVENT = "no event";

/**
 * Which class when, on a fixed grid of the session's audio time (bins of `binS` seconds).
 *
 * Each update answers for the audio that arrived since the previous update (normally one hop; after dropped hops,
 * everything since the last answer, at most one window): those bins get its probabilities if it heard an event,
 * else "no event" (the live API judges the newest hop against the session's noise floor). So the timeline lags
 * real time by one answer, never by a window, and a bin's class is the one the model named for that moment.
 * The attention curve (drawAttention) shows where inside the latest window the evidence was.
 */
export class Timeline {
  /**
   * @param {{labels: string[], binS?: number, keepS?: number}} options
   */
  constructor({ labels, binS = 0.1, keepS = 120 }) {
    this.labels = labels;
    this.binS = binS;
    this.keepBins = Math.round(keepS / binS);
    this.bins = new Map(); // bin index -> {evidence: Float32Array(classes), covered, winner}
    this.latest = null;
    this.nowS = 0;
  }

  /** Add one update (the live API's UPDATE object). */
  add(u) {
    const previousEnd = this.latest ? this.latest.t_end_s : u.window_start_s;
    const from = Math.max(previousEnd, u.window_start_s);
    this.latest = u;
    this.nowS = Math.max(this.nowS, u.t_end_s);
    const first = Math.round(from / this.binS);
    const last = Math.round(u.t_end_s / this.binS) - 1;
    const top = u.no_event ? -1 : this.labels.indexOf(u.label);
    for (let i = first; i <= last; i++) {
      const evidence = new Float32Array(this.labels.length);
      if (top >= 0) (u.probabilities || []).forEach((p, c) => { evidence[c] = p; });
      this.bins.set(i, { evidence, covered: true, winner: top });
    }
    const oldest = Math.floor(this.nowS / this.binS) - this.keepBins;
    for (const i of this.bins.keys()) if (i < oldest) this.bins.delete(i);
  }

  /** What the timeline shows at session time t: a label, NO_EVENT, or null (no window has covered t yet). */
  at(t) {
    const b = this.bins.get(Math.floor(t / this.binS));
    if (!b || !b.covered) return null;
    return b.winner >= 0 ? this.labels[b.winner] : NO_EVENT;
  }

  /** Every covered bin, oldest first: [{t0, t1, label}] (label NO_EVENT where nothing was heard). */
  verdicts() {
    return [...this.bins.keys()].sort((a, b) => a - b).filter((i) => this.bins.get(i).covered).map((i) => ({
      t0: +(i * this.binS).toFixed(3),
      t1: +((i + 1) * this.binS).toFixed(3),
      label: this.at(i * this.binS + this.binS / 2),
    }));
  }

  /** The classes with the most evidence between t0 and t1, best first (at most k). */
  topClasses(t0, t1, k) {
    const total = new Float32Array(this.labels.length);
    for (const [i, b] of this.bins) {
      if ((i + 1) * this.binS <= t0 || i * this.binS >= t1) continue;
      for (let c = 0; c < total.length; c++) total[c] = Math.max(total[c], b.evidence[c]);
    }
    // A taught model's background output ("no event") has its own band, not a class row.
    return [...total.keys()].filter((c) => total[c] > 0.05 && this.labels[c] !== NO_EVENT)
      .sort((a, b) => total[b] - total[a]).slice(0, k);
  }
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

function themeColors(canvas) {
  const css = getComputedStyle(canvas);
  const read = (name, fallback) => (css.getPropertyValue(name) || "").trim() || fallback;
  return {
    fg: read("--fg", read("--jp-ui-font-color1", "#1b1f24")),
    muted: read("--muted", read("--jp-ui-font-color2", "#5b6470")),
    border: read("--border", read("--jp-border-color1", "#d5dae1")),
    wave: read("--wave", "#9aa3ad"),
    attention: read("--attention", "#d9480f"),
    noEvent: read("--no-event", "#9aa3ad"),
  };
}

function prepareCanvas(canvas, cssHeight) {
  const dpr = window.devicePixelRatio || 1;
  const cssWidth = canvas.clientWidth || 900;
  canvas.width = Math.round(cssWidth * dpr);
  canvas.height = Math.round(cssHeight * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssWidth, cssHeight);
  return { ctx, width: cssWidth, height: cssHeight };
}

/** Tick spacing for a span of `seconds` (about 6-10 labelled ticks). */
function tickStep(seconds) {
  for (const s of [0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300]) if (seconds / s <= 10) return s;
  return 600;
}

function drawTimeAxis(ctx, x0, x1, y, t0, t1, colors, format) {
  const step = tickStep(t1 - t0);
  ctx.strokeStyle = colors.border;
  ctx.fillStyle = colors.muted;
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  ctx.beginPath();
  ctx.moveTo(x0, y + 0.5);
  ctx.lineTo(x1, y + 0.5);
  ctx.stroke();
  const x = (t) => x0 + ((t - t0) / (t1 - t0)) * (x1 - x0);
  for (let t = Math.ceil(t0 / step - 1e-9) * step; t <= t1 + 1e-9; t += step) {
    ctx.beginPath();
    ctx.moveTo(x(t) + 0.5, y);
    ctx.lineTo(x(t) + 0.5, y + 4);
    ctx.stroke();
    ctx.fillText(format(t), x(t), y + 5);
  }
}

/**
 * Draw the last `spanS` seconds of a Timeline: one row per leading class (cell shade = probability where the model
 * heard it), a "no event" band, the verdict strip on top and a time axis ending at "now".
 *
 * @param {HTMLCanvasElement} canvas
 * @param {Timeline} timeline
 * @param {{spanS?: number, rows?: number, height?: number}} [options]
 */
export function drawTimeline(canvas, timeline, options = {}) {
  const spanS = options.spanS || 30;
  const rows = Math.min(options.rows || 5, timeline.labels.filter((l) => l !== NO_EVENT).length);
  const colors = themeColors(canvas);
  const now = timeline.nowS;
  const t0 = now - spanS;
  const classes = timeline.topClasses(t0, now, rows);
  const rowH = 20;
  const stripH = 14;
  const labelW = 110;
  const height = options.height || stripH + 6 + rowH * (rows + 1) + 24;
  const { ctx, width } = prepareCanvas(canvas, height);
  const x0 = labelW;
  const x1 = width - 16; // room for the "now" label
  const x = (t) => x0 + ((t - t0) / spanS) * (x1 - x0);
  const color = (c) => PALETTE[c % PALETTE.length];
  const rowY = (r) => stripH + 6 + r * rowH;
  ctx.font = "12px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  ctx.fillStyle = colors.muted;
  ctx.fillText("heard", x0 - 6, stripH / 2);
  classes.forEach((c, r) => {
    ctx.fillStyle = color(c);
    ctx.fillText(timeline.labels[c], x0 - 6, rowY(r) + rowH / 2);
  });
  ctx.fillStyle = colors.muted;
  ctx.fillText(NO_EVENT, x0 - 6, rowY(rows) + rowH / 2);
  for (let r = 0; r <= rows; r++) {
    ctx.strokeStyle = colors.border;
    ctx.strokeRect(x0 + 0.5, rowY(r) + 0.5, x1 - x0, rowH - 1);
  }
  const w = Math.max(1, x(timeline.binS) - x(0) + 0.5);
  for (const [i, b] of timeline.bins) {
    const t = i * timeline.binS;
    if (t + timeline.binS <= t0 || !b.covered) continue;
    const px = x(Math.max(t, t0));
    classes.forEach((c, r) => {
      if (b.evidence[c] <= 0) return;
      ctx.globalAlpha = Math.min(1, 0.15 + 0.85 * b.evidence[c]);
      ctx.fillStyle = color(c);
      ctx.fillRect(px, rowY(r) + 1, w, rowH - 2);
    });
    ctx.globalAlpha = 1;
    if (b.winner < 0) {
      ctx.fillStyle = colors.noEvent;
      ctx.fillRect(px, rowY(rows) + 1, w, rowH - 2);
    }
    ctx.fillStyle = b.winner >= 0 ? color(b.winner) : colors.noEvent;
    ctx.globalAlpha = b.winner >= 0 ? 1 : 0.35;
    ctx.fillRect(px, 1, w, stripH - 2);
    ctx.globalAlpha = 1;
  }
  drawTimeAxis(ctx, x0, x1, rowY(rows + 1) + 2, -spanS, 0, colors, (t) => (Math.abs(t) < 1e-6 ? "now" : `${t} s`));
  canvas.dataset.rows = classes.map((c) => timeline.labels[c]).join("|");
  canvas.dataset.nowS = now.toFixed(2);
}

/**
 * Draw a listening view from a Timeline: the timeline itself and the latest window's attention over its waveform
 * (the page's Listen card, the Teach panel and the widget's Listener all draw this).
 *
 * @param {HTMLCanvasElement} timelineCanvas  @param {HTMLCanvasElement} waveCanvas  @param {Timeline} timeline
 * @param {{rows?: number, waveHeight?: number}} [options]
 * @returns {object|undefined} the latest update, drawn (undefined before the first)
 */
export function drawListening(timelineCanvas, waveCanvas, timeline, options = {}) {
  drawTimeline(timelineCanvas, timeline, { rows: options.rows });
  const u = timeline.latest;
  if (u) {
    drawAttention(waveCanvas, {
      startS: u.window_start_s, endS: u.t_end_s, envelope: u.waveform, frameTimes: u.frame_times_s,
      attention: u.attention, uniform: u.attention_uniform, height: options.waveHeight || 160,
    });
  }
  return u;
}

/**
 * Draw a waveform with its time axis, window lines (labelled) and the mean attention over heads against uniform:
 * the curve's height is its weight divided by the uniform weight (1 / frames), on a fixed scale with a dashed line at
 * 1x, so attention that is spread evenly looks flat, not like a confident peak.
 *
 * @param {HTMLCanvasElement} canvas
 * @param {object} d
 * @param {number} d.startS  @param {number} d.endS  the span shown (seconds)
 * @param {{min: number[], max: number[]}} [d.envelope]  min/max per bin over the span, or:
 * @param {Float32Array} [d.samples]  16 kHz samples from startS
 * @param {number[]} d.frameTimes  @param {number[]} d.attention  weights per frame (summing to 1)
 * @param {number} [d.uniform]  the uniform weight (default 1 / frames)
 * @param {{start_s: number, end_s: number}[]} [d.windows]  window boundaries to draw and label
 * @param {number} [d.height=220]
 */
export function drawAttention(canvas, d) {
  const colors = themeColors(canvas);
  const { ctx, width, height } = prepareCanvas(canvas, d.height || 220);
  const axisH = 20;
  const leftW = 34;
  const x0 = leftW;
  const x1 = width - 16;
  const plotH = height - axisH;
  const span = Math.max(1e-3, d.endS - d.startS);
  const x = (t) => x0 + ((t - d.startS) / span) * (x1 - x0);
  const mid = plotH / 2;
  // The waveform is scaled to its own peak (quiet microphones would otherwise draw a flat line); the attention
  // curve below is not.
  let lows = [];
  let highs = [];
  let wavePoints = 0;
  if (d.envelope && d.envelope.min && d.envelope.min.length) {
    lows = d.envelope.min;
    highs = d.envelope.max;
    wavePoints = lows.length;
  } else if (d.samples && d.samples.length) {
    const samples = d.samples;
    const columns = Math.max(1, Math.floor(x1 - x0));
    const perPx = samples.length / columns;
    for (let px = 0; px < columns; px++) {
      let lo = 0;
      let hi = 0;
      const end = Math.min(samples.length, Math.floor((px + 1) * perPx));
      for (let i = Math.floor(px * perPx); i < end; i++) {
        if (samples[i] < lo) lo = samples[i];
        if (samples[i] > hi) hi = samples[i];
      }
      lows.push(lo);
      highs.push(hi);
    }
    wavePoints = samples.length;
  }
  // Scaled to its peak, but never magnified past 4x (a quarter of full scale fills the plot): a quiet room then
  // still looks quiet, and an event stands out against it.
  const wavePeak = Math.max(0.25, ...highs.map(Math.abs), ...lows.map(Math.abs));
  ctx.fillStyle = colors.wave;
  ctx.globalAlpha = 0.6; // behind the attention curve and its scale
  const bw = (x1 - x0) / Math.max(1, lows.length);
  for (let k = 0; k < lows.length; k++) {
    const hi = highs[k] / wavePeak;
    const lo = lows[k] / wavePeak;
    ctx.fillRect(x0 + k * bw, mid - hi * mid * 0.9, Math.max(1, bw), Math.max(1, (hi - lo) * mid * 0.9));
  }
  ctx.globalAlpha = 1;

  const att = d.attention || [];
  const times = d.frameTimes || [];
  const uniform = d.uniform || (att.length ? 1 / att.length : 1);
  const ratios = att.map((a) => a / uniform);
  const peak = ratios.length ? Math.max(...ratios) : 0;
  // Fixed scale, growing in steps only for a sharper curve: 1x (uniform) always sits at the same height.
  const top = [4, 8, 16, 32, 64, 128, 256].find((v) => v >= peak) || Math.ceil(peak);
  const y = (r) => plotH - 4 - (r / top) * (plotH - 14);
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  ctx.fillStyle = colors.muted;
  ctx.strokeStyle = colors.border;
  for (const r of top > 4 ? [1, top / 2, top] : [0, 1, top / 2, top]) { // 0 and 1 would overlap on a tall scale
    ctx.fillText(`${r}\u00d7`, x0 - 4, y(r));
  }
  ctx.setLineDash([4, 4]);
  ctx.strokeStyle = colors.muted;
  ctx.beginPath();
  ctx.moveTo(x0, y(1));
  ctx.lineTo(x1, y(1));
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.textAlign = "left";
  ctx.fillText("uniform", x0 + 4, y(1) - 8);
  if (ratios.length) {
    ctx.strokeStyle = colors.attention;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ratios.forEach((r, j) => {
      if (j === 0) ctx.moveTo(x(times[j]), y(r));
      else ctx.lineTo(x(times[j]), y(r));
    });
    ctx.stroke();
    ctx.lineWidth = 1;
  }
  if (d.windows && d.windows.length > 1) {
    ctx.strokeStyle = colors.border;
    ctx.fillStyle = colors.muted;
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    d.windows.forEach((w, k) => {
      if (k > 0) {
        ctx.beginPath();
        ctx.moveTo(x(w.start_s) + 0.5, 0);
        ctx.lineTo(x(w.start_s) + 0.5, plotH);
        ctx.stroke();
      }
      ctx.fillText(`window ${k + 1}`, x(w.start_s) + 3, 2);
    });
  }
  drawTimeAxis(ctx, x0, x1, plotH, d.startS, d.endS, colors, (t) => `${+t.toFixed(2)} s`);
  canvas.dataset.attentionPoints = String(ratios.length);
  canvas.dataset.wavePoints = String(wavePoints);
  canvas.dataset.attentionPeakRatio = peak.toFixed(3);
  canvas.dataset.scaleTop = String(top);
}

// ------------------------------------------------------------------------------------------------------------------
// The notebook widget views' controls (Record and Listen share them; styles in widget/controls.css)
// ------------------------------------------------------------------------------------------------------------------

/** An element with a class name and text. */
export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * A widget view's frame: a row with a start button, Stop, a level meter and `extra` elements, then a status line.
 * `show(text, kind)` sets the status line and its kind ("info", "error", ...; also the root's data-state).
 * Returns {root, start, stop, bar, status, show}; the view appends the rest of its content to `root`.
 */
export function widgetControls({ rootClass, startClass, startText, stopClass, hint, extra = [] }) {
  const root = element("div", `asit-widget ${rootClass}`);
  const start = element("button", startClass, startText);
  const stop = element("button", stopClass, "\u25A0 Stop");
  const meter = element("div", "asit-meter");
  const bar = element("div", "asit-meter-bar");
  const status = element("div", "asit-status", hint);
  status.setAttribute("role", "status");
  status.setAttribute("aria-live", "polite");
  start.type = stop.type = "button";
  stop.disabled = true;
  meter.appendChild(bar);
  const row = element("div", "asit-row");
  row.append(start, stop, meter, ...extra);
  root.append(row, status);
  const show = (text, kind) => {
    status.textContent = text;
    status.dataset.kind = kind || "info";
    root.dataset.state = kind || "info";
  };
  return { root, start, stop, bar, status, show };
}
