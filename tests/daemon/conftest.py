"""A daemon for the protocol tests that need nothing but a token and two sessions (modules with other
needs define their own ``daemon``)."""

from __future__ import annotations

import pytest

from streamer.daemon.server import Daemon, ServeOptions

TOKEN = "s3cret"


@pytest.fixture
async def daemon(engine):
    d = Daemon(engine, "tiny.en", ServeOptions(port=0, token=TOKEN, max_sessions=2))
    await d.start()
    yield d
    await d.shutdown()
