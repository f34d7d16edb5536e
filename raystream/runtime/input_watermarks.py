"""Internal: the watermark of a task's head operator, from the watermarks of its input channels.

One :class:`~raystream.core.watermarks.WatermarkValve` per logical input (the channels of one
input are its valve's inputs); the operator's watermark is the minimum over inputs that are not
idle, and only ever moves forward. When every input is idle the operator hears so.
"""

from __future__ import annotations

from typing import Any

from raystream.core.time import MAX_TS, MIN_TS
from raystream.core.watermarks import WatermarkValve


class InputWatermarks:
    def __init__(self, channels: list[tuple[int, str]]):
        """``channels[i] = (logical input index, name)`` of channel ``i``, as in the gate."""
        n_inputs = max((inp for inp, _ in channels), default=0) + 1
        counts = [0] * n_inputs
        self._local: list[int] = []  # channel -> its index among its input's channels
        for inp, _ in channels:
            self._local.append(counts[inp])
            counts[inp] += 1
        self._input_of = [inp for inp, _ in channels]
        self._valves = [WatermarkValve(c) for c in counts]
        self._input_wm = [MIN_TS] * n_inputs
        self._idle_out = False
        self.last = MIN_TS  # the watermark the head operator has
        self.head: Any = None  # set once the operators exist

    def on_watermark(self, channel: int, timestamp: int) -> None:
        inp = self._input_of[channel]
        new = self._valves[inp].on_watermark(self._local[channel], timestamp)
        if new is not None:
            self._input_wm[inp] = new
            self._advance()

    def on_status(self, channel: int, idle: bool) -> None:
        inp = self._input_of[channel]
        valve = self._valves[inp]
        if idle:
            new = valve.on_idle(self._local[channel])
            if new is not None:
                self._input_wm[inp] = new
                self._advance(also=inp)
            else:
                self._advance()
        else:
            valve.on_active(self._local[channel])
        all_idle = all(v.output_idle for v in self._valves)
        if all_idle != self._idle_out:
            self._idle_out = all_idle
            self.head.process_watermark_status(all_idle)

    def end_of_input(self) -> None:
        """Every input ended: whatever the channels said last, no more records will come."""
        if self.last < MAX_TS:
            self.last = MAX_TS
            self.head.process_watermark(MAX_TS)

    def _advance(self, also: int | None = None) -> None:
        """Forwards the minimum over inputs that are not idle (``also``: count that input even
        though it just went idle — its catch-up watermark must go out before the IDLE status)."""
        active = [
            w
            for i, (w, v) in enumerate(zip(self._input_wm, self._valves))
            if not v.output_idle or i == also
        ]
        if not active:
            return
        combined = min(active)
        if combined > self.last:
            self.last = combined
            self.head.process_watermark(combined)
