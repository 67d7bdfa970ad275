"""Latency of each live protocol on one client: protocol v1, OpenAI Realtime, Deepgram live, Wyoming.

    python bench/protocols.py [--sets librivox] [--repeat 1]

One ``streamer serve`` process (default options, ``--wyoming-port``); for each protocol, one client of
that protocol's own library (``websockets``, ``openai``, ``deepgram-sdk``, ``wyoming``) streams the same
program (bench/speech.py: its clips joined with 1 s gaps) at real time in 0.1 s chunks. Every word of
text a client receives is matched, in order, to the program's reference words (offline decode and
alignment); its latency is when it arrived minus the end of the word in the audio sent. Committed: text
that is final (v1 ``final``, Realtime ``delta``, Deepgram ``is_final``, Wyoming ``transcript-chunk``);
partial: the first time a word is shown at all (v1 ``partial`` and Deepgram interim results; Realtime
and Wyoming have no revisable text, so there it is the committed figure).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import difflib
import json
import re
import time
from collections.abc import Awaitable, Callable

import numpy as np
import soxr
from load import start_daemon
from speech import RefWord, normalize_words, pct, program, reference_words

from streamer.engine import Engine
from streamer.model.loading import load_model

CHUNK = 0.1
TOKEN = "bench"
Sink = Callable[[str, bool], None]  # (text, final) as it arrives


class Matcher:
    """Received text, aligned to the reference words at the end (difflib, so that a misheard or missing
    stretch does not lose the rest). Committed: the final words, in order, each with its arrival. Shown:
    each partial aligned just after the words committed when it came, or the final if that was first."""

    def __init__(self, refs: list[RefWord], began: float):
        self.refs = refs
        self.began = began
        self.finals: list[tuple[str, float]] = []  # (word, arrival) of every committed word
        self.partials: list[tuple[int, list[str], float]] = []  # (words committed before it, its words, arrival)
        self.committed: list[str] = []  # the final texts, for --texts

    def __call__(self, text: str, final: bool) -> None:
        now = time.perf_counter() - self.began
        words = normalize_words(text)
        if final:
            self.committed.append(text)
            self.finals += [(w, now) for w in words]
        elif words:
            self.partials.append((len(self.finals), words, now))

    def figures(self) -> dict[str, float]:
        keys = [r.key for r in self.refs]
        aligned: dict[int, int] = {}  # committed word -> reference word
        blocks = difflib.SequenceMatcher(None, [w for w, _ in self.finals], keys, autojunk=False)
        for block in blocks.get_matching_blocks():
            aligned.update((block.a + k, block.b + k) for k in range(block.size))
        final_seen = {b: self.finals[a][1] for a, b in aligned.items()}
        ref_after = [0]  # ref_after[k]: the reference word after the first k committed words
        for a in range(len(self.finals)):
            ref_after.append(aligned[a] + 1 if a in aligned else ref_after[-1])
        shown = dict(final_seen)
        for committed, words, now in self.partials:
            lo = ref_after[committed]
            window = keys[lo : lo + len(words) + 8]
            for block in difflib.SequenceMatcher(None, words, window, autojunk=False).get_matching_blocks():
                for k in range(block.size):
                    i = lo + block.b + k
                    shown[i] = min(shown.get(i, now), now)
        final = [t - self.refs[i].end for i, t in final_seen.items()]
        first = [t - self.refs[i].end for i, t in shown.items()]
        return {"words": len(self.refs), "committed": len(final), "c50": pct(final, 50), "c90": pct(final, 90),
                "p50": pct(first, 50), "p90": pct(first, 90)}


async def paced(chunks: list[bytes], send: Callable[[bytes], Awaitable[None]], began: float) -> None:
    for i, chunk in enumerate(chunks):
        await asyncio.sleep(max(0.0, began + (i + 1) * CHUNK - time.perf_counter()))
        await send(chunk)


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def v1(port: int, audio: np.ndarray, sink: Callable[[float], Sink]) -> None:
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/v1/stream?token={TOKEN}") as ws:
        await ws.send(json.dumps({"type": "start"}))
        await ws.recv()
        began = time.perf_counter()
        on = sink(began)

        async def read() -> None:
            async for message in ws:
                m = json.loads(message)
                if m["type"] in ("final", "partial"):
                    on(m["text"], m["type"] == "final")

        reader = asyncio.create_task(read())
        await paced(split(pcm16(audio), int(16000 * CHUNK) * 2), ws.send, began)
        await ws.send(json.dumps({"type": "end"}))
        await reader


async def realtime(port: int, audio: np.ndarray, sink: Callable[[float], Sink]) -> None:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN)
    data = pcm16(soxr.resample(audio, 16000, 24000))
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()  # session.created
        began = time.perf_counter()
        on = sink(began)
        started, completed = 0, 0
        settled = asyncio.Event()

        async def send(chunk: bytes) -> None:
            await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())

        async def read() -> None:
            nonlocal started, completed
            async for event in conn:
                if event.type == "conversation.item.input_audio_transcription.delta":
                    on(event.delta, True)
                elif event.type == "input_audio_buffer.speech_started":
                    started += 1
                elif event.type == "conversation.item.input_audio_transcription.completed":
                    completed += 1
                    if sent and completed == started:
                        settled.set()

        sent = False
        reader = asyncio.create_task(read())
        await paced(split(data, int(24000 * CHUNK) * 2), send, began)
        sent = True
        if completed < started:
            await asyncio.wait_for(settled.wait(), 30)
        reader.cancel()


async def deepgram(port: int, audio: np.ndarray, sink: Callable[[float], Sink]) -> None:
    from deepgram import AsyncDeepgramClient
    from deepgram.environment import DeepgramClientEnvironment

    where = f"127.0.0.1:{port}"
    env = DeepgramClientEnvironment(base=f"http://{where}", production=f"ws://{where}", agent=f"ws://{where}",
                                    agent_rest=f"http://{where}")
    client = AsyncDeepgramClient(api_key=TOKEN, environment=env)
    async with client.listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000,
                                        interim_results="true", punctuate="true") as socket:
        began = time.perf_counter()
        on = sink(began)

        async def read() -> None:
            async for m in socket:
                if getattr(m, "type", None) == "Results":
                    on(m.channel.alternatives[0].transcript, bool(m.is_final))

        reader = asyncio.create_task(read())
        await paced(split(pcm16(audio), int(16000 * CHUNK) * 2), socket.send_media, began)
        await socket.send_close_stream()
        await reader


async def wyoming(port: int, audio: np.ndarray, sink: Callable[[float], Sink]) -> None:
    from wyoming.asr import Transcript, TranscriptChunk
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient

    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        began = time.perf_counter()
        on = sink(began)

        async def send(chunk: bytes) -> None:
            await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=chunk).event())

        async def read() -> None:
            while (event := await client.read_event()) is not None:
                if TranscriptChunk.is_type(event.type):
                    on(TranscriptChunk.from_event(event).text, True)
                elif Transcript.is_type(event.type):
                    return

        reader = asyncio.create_task(read())
        await paced(split(pcm16(audio), int(16000 * CHUNK) * 2), send, began)
        await client.write_event(AudioStop().event())
        await reader


PROTOCOLS = {"v1": v1, "realtime": realtime, "deepgram": deepgram, "wyoming": wyoming}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="librivox")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--texts", action="store_true", help="print each protocol's committed text too")
    args = parser.parse_args()
    prog = program(args.sets.split(","))
    refs = reference_words(Engine(load_model("tiny.en"), max_batch=1), prog)
    log: list[str] = []
    proc, url = start_daemon(["--token", TOKEN, "--wyoming-port", "0"], log)
    port = int(url.split(":")[2].split("/")[0])
    found = [int(m.group(1)) for line in log if (m := re.search(r"wyoming on tcp://\S+:(\d+)", line))]
    ports = {"wyoming": found[0] if found else -1}
    print(f"{prog.seconds:.1f} s of speech ({len(refs)} words) per run, one client at a time, real time")
    print(f"{'protocol':10} {'committed':>9} {'c50':>6} {'c90':>6} {'shown p50':>9} {'p90':>6}")
    try:
        for _ in range(args.repeat):
            for name in args.protocols.split(","):
                matchers: list[Matcher] = []

                def sink(began: float, matchers: list[Matcher] = matchers) -> Sink:
                    matchers.append(Matcher(refs, began))
                    return matchers[-1]

                asyncio.run(PROTOCOLS[name](ports.get(name, port), prog.audio, sink))
                f = matchers[0].figures()
                print(f"{name:10} {f['committed']:>4}/{f['words']:<4} {f['c50']:6.2f} {f['c90']:6.2f} "
                      f"{f['p50']:9.2f} {f['p90']:6.2f}", flush=True)
                if args.texts:
                    print("   ", " ".join(matchers[0].committed))
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
