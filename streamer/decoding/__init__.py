"""Turning encoder output into tokens: logit rules, greedy/beam decoding, long-form transcription."""
