// AudioWorklet: the microphone at the context's rate -> 16 kHz mono PCM16 frames of 50 ms.
// Downsampling averages the input over each output sample's span (a box low-pass), which keeps
// the energy above 8 kHz from folding back into the speech band.
class Pcm16Downsampler extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const target = (options.processorOptions && options.processorOptions.targetRate) || 16000;
    const frameMs = (options.processorOptions && options.processorOptions.frameMs) || 50;
    this.step = sampleRate / target; // input samples per output sample (3 at 48 kHz)
    this.frameSize = Math.round((target * frameMs) / 1000);
    this.frame = new Int16Array(this.frameSize);
    this.filled = 0;
    this.acc = 0; // sum of the inputs of the output sample being built
    this.count = 0; // how many inputs are in acc
    this.pos = 0; // position inside the current output sample's span
    this.started = false;
  }

  process(inputs) {
    if (!this.started) {
      this.started = true;
      this.port.postMessage("running"); // the graph is being pulled: the page opens the microphone now
    }
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const n = input[0].length;
    for (let i = 0; i < n; i++) {
      let x = 0;
      for (let c = 0; c < channels; c++) x += input[c][i];
      this.acc += x / channels;
      this.count += 1;
      this.pos += 1;
      if (this.pos >= this.step) {
        this.pos -= this.step;
        const y = Math.max(-1, Math.min(1, this.acc / this.count));
        this.frame[this.filled++] = y < 0 ? y * 32768 : y * 32767;
        this.acc = 0;
        this.count = 0;
        if (this.filled === this.frameSize) {
          this.port.postMessage(this.frame.buffer, [this.frame.buffer]); // transferred: a new one follows
          this.frame = new Int16Array(this.frameSize);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("pcm16-downsampler", Pcm16Downsampler);
