"""Carries a relay's intents out on a store and keeps every delivery in order.

Sans-I/O: the hub hands the relay's output (deliveries and intents) to :meth:`run` and
fans out what comes back. Intents go to the store; their completions go back to the relay,
which turns them into deliveries. Everything leaves in the order the relay produced it:
while an intent is unanswered, the deliveries produced after it wait behind it, so nobody
sees a ``msg`` before the ``ready`` that came first, whatever the store's latency.

With a store that completes inside ``submit`` (the memory store) nothing ever waits and
:meth:`run` returns every delivery at once. With one that answers later, the adapter calls
:meth:`drain` when the store's wake-up fires and fans out what it returns.

A cluster's store (chatcli.cluster) also hands out :class:`Relayed` messages, stored by
other nodes, among its completions. They answer no intent: what the relay makes of one
goes out right after everything answered before it, ahead of what still waits on an
unanswered intent (the store places each where it belongs in the room's order).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from chatcli.core.intents import Intent, Relayed, RelayedBoard
from chatcli.core.relay import Close, Delivery, Effect, Raw, Relay
from chatcli.store.base import Store

__all__ = ["StorePipeline"]

#: effects that go to connections as they are; everything else is an intent for the store
_TO_CONNECTIONS = (Delivery, Close, Raw)


class _Slot:
    """An intent submitted to the store, waiting in line for its completion."""

    __slots__ = ("deliveries", "intent")

    def __init__(self, intent: Intent) -> None:
        self.intent = intent
        #: what the relay made of the completion: deliveries, closes and further slots
        self.deliveries: list[Delivery | Close | Raw | _Slot] | None = None


class StorePipeline:
    """Between one relay and one store: submits intents, orders what comes back."""

    def __init__(self, relay: Relay, store: Store) -> None:
        self.relay = relay
        self.store = store
        #: deliveries and unanswered intents in the order the relay produced them
        self._line: deque[Delivery | Close | Raw | _Slot] = deque()
        #: submitted intents not yet answered, in submission order
        self._unanswered: deque[_Slot] = deque()

    @property
    def waiting(self) -> int:
        """Intents submitted to the store and not answered yet."""
        return len(self._unanswered)

    def run(self, effects: Iterable[Effect]) -> list[Delivery | Close | Raw]:
        """Submit the intents among ``effects``; return the deliveries that may go now."""
        out: list[Delivery | Close | Raw] = []
        line = self._line
        if self._unanswered:  # an asynchronous store may have answered meanwhile
            self._collect(out)
            self._release(out)
        for effect in effects:
            if isinstance(effect, _TO_CONNECTIONS):
                if line:
                    line.append(effect)
                else:
                    out.append(effect)
                continue
            line.append(self._submit(effect))
            self._collect(out)
            self._release(out)
        return out

    def _submit(self, intent: Intent) -> _Slot:
        slot = _Slot(intent)
        self._unanswered.append(slot)
        self.store.submit(intent)
        return slot

    def drain(self) -> list[Delivery | Close | Raw]:
        """Take the store's completions that arrived since; return what may go now."""
        out: list[Delivery | Close | Raw] = []
        self._collect(out)
        self._release(out)
        return out

    def _collect(self, out: list[Delivery | Close | Raw]) -> None:
        """Turn the store's completions into effects; a completion may ask for more
        (a login answered by the account lookup then recalls the room's history): those
        intents are submitted at once and take the completed slot's place in the line.
        A relayed message goes to ``out`` behind what may go before it."""
        while completions := self.store.completed():
            for completion in completions:
                if type(completion) is Relayed or type(completion) is RelayedBoard:
                    self._release(out)
                    out.extend(self.relay.complete(completion))  # type: ignore[arg-type]
                    continue
                assert not isinstance(completion, (Relayed, RelayedBoard))
                slot = self._unanswered.popleft()
                if completion.intent is not slot.intent:
                    raise RuntimeError("the store answered its intents out of order")
                slot.deliveries = [
                    effect if isinstance(effect, _TO_CONNECTIONS) else self._submit(effect)
                    for effect in self.relay.complete(completion)
                ]

    def _release(self, out: list[Delivery | Close | Raw]) -> None:
        line = self._line
        while line:
            head = line[0]
            if type(head) is _Slot:
                if head.deliveries is None:
                    return
                line.popleft()
                line.extendleft(reversed(head.deliveries))
                continue
            out.append(head)  # type: ignore[arg-type]
            line.popleft()
