"""The sans-I/O streaming core: audio frames in, typed events out. No asyncio, sockets or threads."""
