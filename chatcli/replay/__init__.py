"""Transcript tools: timed playback, filters and export, and re-injection into a server."""
