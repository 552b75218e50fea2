"""Terminal front ends: the one renderer, the ``join`` session and the playback controls."""
