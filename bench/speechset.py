"""The long multi-sentence speech set: three synthetic speakers reading our own text with pauses.

    python bench/speechset.py            # (re)writes tests/fixtures/speech/{name}.wav and .txt

Each passage is read by espeak-ng with its own voice and speed; sentences are joined with the pause
written before each (0.2-2 s of digital silence), so a stream sees several utterances, short and long
pauses, and sentences that run on with hardly a breath. The WAV files are kept in the repository
(16 kHz mono PCM16) so tests and benchmarks never need espeak-ng; the text beside each is the reference.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "speech"
RATE = 16000


@dataclass(frozen=True)
class Passage:
    name: str
    voice: str
    speed: int  # words per minute
    pitch: int
    sentences: tuple[tuple[float, str], ...]  # (pause before, sentence)


PASSAGES = (
    Passage("harbor", "en-us", 165, 45, (
        (0.5, "The harbor was quiet on the morning the boats came back."),
        (1.2, "Fishermen had waited all week for the storm to pass."),
        (0.4, "Their wives stood on the wall and counted the sails."),
        (1.8, "Nobody spoke until the last boat turned the corner of the bay."),
        (0.3, "Then the whole village ran down to the water at once."),
        (1.0, "Children carried ropes, and old men carried lanterns."),
        (0.6, "The sea looked grey and tired after three days of wind."),
        (2.0, "One of the boats had lost its mast, but every man was safe."),
        (0.2, "They tied it to the pier and pulled the nets onto the stones."),
        (0.9, "There were more fish than anyone had seen in a year."),
        (1.5, "That night they ate fish by the fire and sang the old songs."),
        (0.5, "The captain told the story of the storm four times."),
        (1.1, "Each time the waves grew a little taller."),
        (0.7, "By midnight the children were asleep on their fathers' coats."),
        (1.3, "In the morning the mended nets hung drying along the harbor wall."),
        (0.4, "And the gulls, as always, took their share before anyone noticed."),
    )),
    Passage("garden", "en-gb", 150, 55, (
        (0.6, "My grandmother kept a garden behind the railway station."),
        (0.9, "She grew beans, potatoes, and a row of sunflowers taller than the fence."),
        (1.6, "Every spring she planted the seeds in the same careful order."),
        (0.3, "First the onions, then the carrots, then the lettuce."),
        (1.2, "The trains went past every twenty minutes, and she never looked up."),
        (0.5, "Once a fox made its home under the shed."),
        (2.0, "She left it alone, because it kept the rabbits away from the cabbages."),
        (0.4, "In summer the fields of wheat gave way to a sea of yellow flowers."),
        (1.0, "We picked strawberries until our hands were red."),
        (0.8, "She pressed the best flowers between the pages of a heavy dictionary."),
        (1.4, "Years later I found them there, flat and brown, with her notes beside them."),
        (0.2, "Each note gave the date and the weather."),
        (1.0, "Some of them were written in a language I could not read."),
        (0.7, "I still keep the dictionary on the shelf above my desk."),
    )),
    Passage("workshop", "en-us+f3", 180, 60, (
        (0.4, "The workshop opens at eight, and the first job is always the coffee."),
        (1.0, "After that we check the orders that arrived during the night."),
        (0.3, "Most of them are small repairs, a broken chair or a loose table leg."),
        (1.7, "Last winter a woman brought in a clock that had not worked for fifty years."),
        (0.6, "It had belonged to her great grandfather, who built it himself."),
        (1.3, "We took it apart on the long bench by the window."),
        (0.2, "Every wheel was wrapped in a small piece of newspaper."),
        (0.9, "The newspaper was older than the clock."),
        (2.0, "It took us three weeks to find the one spring that had broken."),
        (0.5, "When the clock finally struck twelve, the whole room went silent."),
        (1.1, "She cried a little, and then she laughed at herself for crying."),
        (0.8, "Now she visits every month and brings us a cake."),
        (1.4, "We have never had so many volunteers for the morning shift."),
        (0.6, "Good work, it turns out, is paid for in many different ways."),
        (1.2, "On Fridays we sweep the floor and sharpen every chisel on the wall."),
        (0.5, "The shavings go into sacks for a farmer who keeps chickens."),
    )),
)


def speak(text: str, voice: str, speed: int, pitch: int, workdir: Path) -> np.ndarray:
    """One sentence from espeak-ng, resampled to 16 kHz mono by sox, as int16."""
    raw = workdir / "raw.wav"
    out = workdir / "out.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)], check=True)
    with wave.open(str(out)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    # espeak-ng pads each sentence with a little silence of its own: cut it, so the pauses are ours.
    voiced = np.flatnonzero(np.abs(samples) > 64)
    return samples[voiced[0] : voiced[-1] + 1] if len(voiced) else samples


def build(passage: Passage, workdir: Path) -> float:
    pieces = []
    for pause, sentence in passage.sentences:
        pieces.append(np.zeros(int(pause * RATE), dtype="<i2"))
        pieces.append(speak(sentence, passage.voice, passage.speed, passage.pitch, workdir))
    pieces.append(np.zeros(RATE, dtype="<i2"))
    audio = np.concatenate(pieces)
    with wave.open(str(OUT / f"{passage.name}.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(audio.tobytes())
    (OUT / f"{passage.name}.txt").write_text(" ".join(s for _, s in passage.sentences) + "\n")
    return len(audio) / RATE


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for passage in PASSAGES:
            seconds = build(passage, Path(tmp))
            print(f"{passage.name}: {seconds:.1f} s ({passage.voice}, {passage.speed} wpm)", file=sys.stderr)


if __name__ == "__main__":
    main()
