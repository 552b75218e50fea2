"""The sans-I/O core: wire protocol, connection state machines and the relay's domain logic.

Nothing in this package imports asyncio, socket, click or rich: it turns bytes into typed
events and events into deliveries, and can be tested and fuzzed without an event loop.
"""
