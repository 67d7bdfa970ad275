"""The WebSocket daemon: protocol v1, one model serving many sessions."""
