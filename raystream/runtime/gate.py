"""Internal: the consumer side of channels — the input gate of a task.

``put`` is called by the actor's ``push`` method for every message that arrives. Messages of one
channel are handed out strictly in sequence-number order (an out-of-order arrival waits in a
small reorder buffer; a duplicate or a gap is an error). ``next`` returns the next message of
any channel that is not blocked, round robin over channels. Taking a message resolves the future
its ``push`` call is waiting on: that answer is the producer's credit for one more message.
A channel can be blocked (barrier alignment): it is simply not consumed, so its producer runs out
of credit and stops — no buffering beyond the channel's capacity.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from raystream.errors import ChannelError


class _Channel:
    __slots__ = ("index", "input_index", "name", "next_seq", "queue", "reorder", "blocked", "ended")

    def __init__(self, index: int, input_index: int, name: str):
        self.index = index
        self.input_index = input_index
        self.name = name
        self.next_seq = 0
        self.queue: deque[tuple[Any, asyncio.Future | None]] = deque()
        self.reorder: dict[int, tuple[Any, asyncio.Future | None]] = {}
        self.blocked = False
        self.ended = False


class InputGate:
    def __init__(self, channels: list[tuple[int, str]]):
        """``channels[i] = (logical input index, name)`` of channel ``i``."""
        self.channels = [_Channel(i, inp, name) for i, (inp, name) in enumerate(channels)]
        self._available: deque[int] = deque()
        self._event = asyncio.Event()
        self.messages_taken = 0
        #: bytes of the (pickled) messages taken so far: counted per message, not per record
        self.bytes_taken = 0

    def __len__(self) -> int:
        return len(self.channels)

    def put(self, channel: int, seq: int, message: Any, credit: asyncio.Future | None) -> None:
        try:
            ch = self.channels[channel]
        except IndexError:
            raise ChannelError(
                f"push on unknown channel {channel} (gate has {len(self.channels)})"
            ) from None
        if seq == ch.next_seq:
            self._enqueue(ch, message, credit)
            while ch.next_seq in ch.reorder:
                m, f = ch.reorder.pop(ch.next_seq)
                self._enqueue(ch, m, f)
        elif seq > ch.next_seq:
            if seq in ch.reorder:
                raise ChannelError(f"channel {ch.name!r}: sequence number {seq} delivered twice")
            ch.reorder[seq] = (message, credit)
        else:
            raise ChannelError(
                f"channel {ch.name!r}: sequence number {seq} already delivered (expected {ch.next_seq})"
            )

    def _enqueue(self, ch: _Channel, message: Any, credit: asyncio.Future | None) -> None:
        was_empty = not ch.queue
        ch.queue.append((message, credit))
        ch.next_seq += 1
        if was_empty and not ch.blocked:
            self._available.append(ch.index)
            self._event.set()

    def poll(self) -> tuple[int, Any] | None:
        """The next message of an unblocked channel, or None if there is none right now."""
        available = self._available
        if not available:
            return None
        idx = available.popleft()
        ch = self.channels[idx]
        message, credit = ch.queue.popleft()
        if ch.queue:
            available.append(idx)
        if credit is not None and not credit.done():
            credit.set_result(None)
        self.messages_taken += 1
        if type(message) is bytes:
            self.bytes_taken += len(message)
        return idx, message

    async def next(self, timeout_s: float | None) -> tuple[int, Any] | None:
        """Waits up to ``timeout_s`` (None: forever) for the next message."""
        got = self.poll()
        if got is not None:
            return got
        if timeout_s is not None and timeout_s <= 0:
            await asyncio.sleep(0)  # never spin: let pushes and control calls in
            return self.poll()
        self._event.clear()
        try:
            if timeout_s is None:
                await self._event.wait()
            elif timeout_s > 0:
                await asyncio.wait_for(self._event.wait(), timeout_s)
        except asyncio.TimeoutError:
            return None
        return self.poll()

    def wake(self) -> None:
        """Ends a ``next`` that is waiting, with no message (the task has other work)."""
        self._event.set()

    def block(self, channel: int) -> None:
        ch = self.channels[channel]
        if not ch.blocked:
            ch.blocked = True
            try:
                self._available.remove(channel)
            except ValueError:
                pass

    def unblock(self, channel: int) -> None:
        ch = self.channels[channel]
        if ch.blocked:
            ch.blocked = False
            if ch.queue:
                self._available.append(channel)
                self._event.set()

    def mark_ended(self, channel: int) -> None:
        self.channels[channel].ended = True

    def is_ended(self, channel: int) -> bool:
        return self.channels[channel].ended

    def all_ended(self) -> bool:
        return all(ch.ended for ch in self.channels)

    def queued(self) -> int:
        return sum(len(ch.queue) + len(ch.reorder) for ch in self.channels)

    def fail_pending(self, exc: BaseException) -> None:
        """Answers every waiting push with ``exc`` (the task is going down)."""
        for ch in self.channels:
            for _, f in list(ch.queue) + list(ch.reorder.values()):
                if f is not None and not f.done():
                    f.set_exception(exc)
            ch.queue.clear()
            ch.reorder.clear()
        self._available.clear()
