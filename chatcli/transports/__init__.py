"""Asyncio adapters that move bytes between sockets and the sans-I/O connection core."""
