"""Whisper in PyTorch: dimensions, modules, weight loading."""
