// ASiT's microphone capture processor (an AudioWorklet module, loaded by recorder.js's openMicrophoneStream).
//
// It runs on the audio thread: mixes its input to mono and posts blocks of ~1024 samples (64 ms at 16 kHz) to the
// main thread, which resamples to 16 kHz when the context runs at another rate and sends chunks to the server.
// Posting every 128-sample render quantum would cost a message per 8 ms for nothing.

const BLOCK = 1024;

class AsitCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(BLOCK);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "stop") this.stopped = true;
    };
  }

  process(inputs) {
    if (this.stopped) return false; // lets the node be collected
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true; // no input connected yet
    const n = channels[0].length;
    for (let i = 0; i < n; i++) {
      let sum = 0;
      for (let c = 0; c < channels.length; c++) sum += channels[c][i];
      this.block[this.filled++] = sum / channels.length;
      if (this.filled === BLOCK) {
        this.port.postMessage(this.block.slice(0));
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("asit-capture", AsitCapture);
