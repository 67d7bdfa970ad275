// streamer live captions: microphone -> AudioWorklet (16 kHz PCM16, 50 ms frames) -> WebSocket
// (protocol v1, docs/protocol.md) -> finals in black, the partial tail in grey. Reconnects with
// backoff and resumes the session, so no final is lost; audio waits in a bounded backlog meanwhile.
// URL parameters: token, server (default: this page's host), overlay=1 (OBS), autostart=1.
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const overlay = params.get("overlay") === "1";
  const token = params.get("token");
  const server = params.get("server") ||
    `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/stream`;
  const autostart = overlay || params.get("autostart") === "1";
  const BACKLOG_BYTES = 16000 * 2 * 30; // 30 s of audio kept while disconnected (oldest dropped)
  const OVERLAY_CHARS = 240; // the overlay keeps the last lines only

  const $ = (id) => document.getElementById(id);
  const view = $("captions"), finalsEl = $("finals"), partialEl = $("partial");
  const button = $("toggle"), stateEl = $("state"), noteEl = $("note");
  if (overlay) document.body.classList.add("overlay");

  let running = false, ws = null, live = false, session = null, nextIndex = 0;
  let sessionId = newSessionId(); // ?session=ID on every connection of a session (balancer affinity)
  let framesRecorded = 0;
  let backlog = [], backlogBytes = 0, attempt = 0, retryTimer = null, audio = null;

  function newSessionId() { // 32 hex digits; crypto.randomUUID needs a secure context, this does not
    return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function setState(state, note = "") {
    stateEl.dataset.state = state;
    stateEl.textContent = state;
    noteEl.textContent = note;
  }

  function render(partial) {
    if (partial !== undefined) partialEl.textContent = partial && finalsEl.textContent ? ` ${partial}` : partial;
    if (overlay && finalsEl.textContent.length > OVERLAY_CHARS) {
      const text = finalsEl.textContent.slice(-OVERLAY_CHARS);
      finalsEl.textContent = text.slice(text.indexOf(" ") + 1);
    }
    view.scrollTop = view.scrollHeight;
  }

  function addFinal(text) {
    if (!text) return;
    const joined = finalsEl.textContent && !/^[.,!?;:]/.test(text) ? ` ${text}` : text;
    finalsEl.textContent += joined;
  }

  function sendAudio(buffer) {
    framesRecorded += 1;
    if (ws && live && ws.readyState === WebSocket.OPEN) {
      ws.send(buffer);
      return;
    }
    backlog.push(buffer);
    backlogBytes += buffer.byteLength;
    while (backlogBytes > BACKLOG_BYTES) backlogBytes -= backlog.shift().byteLength;
  }

  function connect() {
    retryTimer = null;
    const params = new URLSearchParams({ session: sessionId });
    if (token) params.set("token", token);
    const url = `${server}${server.includes("?") ? "&" : "?"}${params}`;
    const sock = new WebSocket(url);
    sock.binaryType = "arraybuffer";
    ws = sock;
    live = false;
    setState(attempt ? "reconnecting" : "connecting");
    sock.onopen = () => {
      const start = session
        ? { type: "start", resume: session, from: nextIndex }
        : { type: "start", sample_rate: 16000, encoding: "pcm_s16le", partials: true, word_timestamps: false };
      sock.send(JSON.stringify(start));
    };
    sock.onmessage = (event) => onMessage(sock, JSON.parse(event.data));
    sock.onclose = (event) => {
      if (ws !== sock) return;
      ws = null;
      live = false;
      if (running) retry(event.code === 1006 && attempt >= 3 ? "cannot connect: is the server up, the token right?" : "");
      else if (stateEl.dataset.state !== "error") setState("stopped");
    };
  }

  function retry(note) {
    const delay = Math.min(10000, 250 * 2 ** attempt) * (0.5 + Math.random() / 2);
    attempt += 1;
    setState("reconnecting", note);
    retryTimer = setTimeout(connect, delay);
  }

  function onMessage(sock, msg) {
    switch (msg.type) {
      case "ready":
        session = msg.session;
        if (!msg.resumed) nextIndex = 0;
        live = true;
        attempt = 0;
        setState("live");
        for (const buffer of backlog) sock.send(buffer);
        backlog = [];
        backlogBytes = 0;
        if (!running) sock.send(JSON.stringify({ type: "end" })); // stopped while away
        break;
      case "partial":
        render(msg.text);
        break;
      case "final":
        if (typeof msg.index === "number") {
          if (msg.index < nextIndex) break; // already shown before a reconnect
          nextIndex = msg.index + 1;
        }
        addFinal(msg.text);
        render();
        break;
      case "error":
        if (msg.code === "unknown_session") session = null; // too late to resume: a new session
        setState("error", msg.message);
        if (msg.code === "bad_start" || msg.code === "too_fast") stop(); // retrying would not help
        break;
      case "done":
        if (running) session = null; // the server is going away; a new session when it is back
        render("");
        break;
    }
  }

  async function start() {
    if (running) return;
    running = true;
    button.textContent = "Stop";
    let context = null;
    try {
      // The graph is built before the microphone opens: audio the track delivers before its
      // source node is connected is lost, so the gap between the two is kept to nothing.
      context = new AudioContext();
      await context.audioWorklet.addModule("worklet.js");
      const node = new AudioWorkletNode(context, "pcm16-downsampler", {
        processorOptions: { targetRate: 16000, frameMs: 50 },
      });
      // An audio output can take seconds to start pulling the graph (PulseAudio switching rates);
      // the microphone opens once the worklet runs, so its first words are not dropped meanwhile.
      const pulled = new Promise((resolve) => {
        node.port.onmessage = (event) => {
          if (typeof event.data === "string") resolve();
          else sendAudio(event.data);
        };
        setTimeout(resolve, 5000);
      });
      node.connect(context.destination); // pulled by the graph (its output is silence)
      if (context.state !== "running") await context.resume();
      await pulled;
      const stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      context.createMediaStreamSource(stream).connect(node);
      audio = { stream, context, node };
    } catch (error) {
      if (context) context.close();
      running = false;
      button.textContent = "Start";
      setState("error", `microphone: ${error.message || error}`);
      return;
    }
    session = null;
    sessionId = newSessionId();
    nextIndex = 0;
    attempt = 0;
    connect();
  }

  function stop() {
    if (!running) return;
    running = false;
    button.textContent = "Start";
    if (audio) {
      audio.node.port.onmessage = null;
      audio.stream.getTracks().forEach((track) => track.stop());
      audio.context.close();
      audio = null;
    }
    if (retryTimer) {
      clearTimeout(retryTimer);
      retryTimer = null;
      setState("stopped");
    }
    if (ws && live) ws.send(JSON.stringify({ type: "end" })); // the last finals, then done and close
  }

  button.addEventListener("click", () => (running ? stop() : start()));
  window.streamerCaptions = {
    start, stop, state: () => stateEl.dataset.state, frames: () => framesRecorded,
    audioState: () => (audio ? `${audio.context.state} at ${audio.context.sampleRate} Hz` : "none"),
  };
  if (autostart) start();
})();
