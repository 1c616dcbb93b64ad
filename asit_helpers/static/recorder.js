// ASiT's one in-browser recorder and WAV encoder, shared by the web page (asit serve) and the notebook widget.
//
// The browser does all the codec work: whatever MediaRecorder produces (webm/opus, ogg, mp4 -- and headless
// Chromium reports an empty MIME type) is decoded with decodeAudioData, mixed to mono and resampled to 16 kHz
// in an OfflineAudioContext, and encoded as 16-bit PCM WAV. Python then only ever receives plain WAV, which
// load_audio reads without FFmpeg.
//
// Dependency-free ES module. Interface:
//   startRecording(options)  -> Promise<{ stop(): Promise<Uint8Array>, cancel(): void, level(): number }>
//   toWav16kMono(blobOrArrayBuffer) -> Promise<Uint8Array>
//   encodeWav(float32Samples, sampleRate) -> Uint8Array

export const TARGET_SAMPLE_RATE = 16000;

// Containers MediaRecorder may produce; the first supported one is asked for. We never trust the resulting
// blob's type (decodeAudioData sniffs the bytes), this only avoids browsers picking something odd.
const PREFERRED_TYPES = ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus", "audio/mp4"];

function microphoneError(err) {
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
