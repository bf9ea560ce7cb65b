"""panoramisk's AMIProtocol with the project's sans-IO codec underneath.

How this works: bytes go into an AmiDecoder; each whole frame is either the reply to an action
we sent (matched by ActionID), an item of a list action (EventList: start ... Complete), or an
event, turned into a typed event and handed to the manager's ``on_ami_event``. An exception in
that handler is logged and the link goes on. When the link drops, every action still waiting
fails at once with AmiLinkLost; nothing is queued to be re-sent (an Originate must never run twice).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping

from panoramisk.ami_protocol import AMIProtocol

from telephony.ami_codec import AmiDecoder, Frame, encode_action
from telephony.errors import AmiProtocolError
from telephony.events import to_event

log = logging.getLogger("hotline.ami")


class AmiLinkLost(ConnectionError):
    """The AMI link dropped while an action waited for its answer."""


@dataclass(frozen=True, slots=True)
class AmiResponse:
    """An action's answer: the Response frame, plus the events of a list action."""

    frame: Frame
    items: tuple[Frame, ...] = ()

    @property
    def success(self) -> bool:
        return self.frame.response in ("Success", "Follows", "Goodbye")

    @property
    def message(self) -> str:
        return self.frame.get("Message", "") or ""

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.frame.get(key, default)


@dataclass
class _Pending:
    action: str
    future: asyncio.Future
    response: Frame | None = None
    items: list[Frame] = field(default_factory=list)


MAX_ABANDONED = 1000
_ids = itertools.count(1)
_prefix = f"hl{os.getpid()}"


def next_action_id() -> str:
    return f"{_prefix}-{next(_ids)}"


class HotlineAmiProtocol(AMIProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.decoder = AmiDecoder()
        self.pending: dict[str, _Pending] = {}
        # Actions given up on (timed out, cancelled): their late list items are dropped, not taken
        # for events. Bounded; the oldest are forgotten first.
        self.abandoned: OrderedDict[str, None] = OrderedDict()
        self.frames_in = 0

    # panoramisk's Manager calls protocol.send(action_dict, as_list=...) and awaits the future.
    def send(self, data: Mapping[str, Any], as_list: bool = False) -> asyncio.Future:
        fields = {k: v for k, v in dict(data).items() if k.lower() not in ("action", "actionid")}
        name = next(v for k, v in dict(data).items() if k.lower() == "action")
        action_id = next((v for k, v in dict(data).items() if k.lower() == "actionid"), None) or next_action_id()
        payload = encode_action(name, fields, action_id)  # raises UnsafeValue before anything is sent
        future = asyncio.get_running_loop().create_future()
        if self.closed:
            future.set_exception(AmiLinkLost(f"AMI link is down; {name} not sent"))
            return future
        self.pending[action_id] = _Pending(name, future)
        self.transport.write(payload)
        return future

    def forget(self, action_id: str) -> None:
        if self.pending.pop(action_id, None) is not None:
            self.abandoned[action_id] = None
            if len(self.abandoned) > MAX_ABANDONED:
                self.abandoned.popitem(last=False)

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        decoder.receive_data(data)
        received_at = time.time()  # every frame of this read came in now
        handler = getattr(self.factory, "on_ami_event", None)
        frames = decoder.drain()
        if self.version is None and decoder.banner:
            self.version = decoder.banner.partition("/")[2]
        self.frames_in += len(frames)
        pending = self.pending  # send() adds to this same dict
        for frame in frames:
            if frame.__class__ is AmiProtocolError:
                self.frames_in -= 1
                log.warning("AMI: dropped a malformed frame: %s", frame)
                continue
            if pending and self._answers_action(frame):
                continue
            if self.abandoned and frame.action_id in self.abandoned:
                if frame.response is not None or frame.get("EventList", "").lower() == "complete":
                    self.abandoned.pop(frame.action_id, None)
                    if frame.response is not None and frame.get("EventList", "").lower() == "start":
                        self.abandoned[frame.action_id] = None   # its items are still to come
                log.debug("AMI: late answer of an abandoned action dropped: %s", frame.action_id)
                continue
            if frame.event is None:
                log.debug("AMI: response to an action nobody waits for: %s", frame.action_id)
                continue
            try:
                event = to_event(frame, received_at)
            except AmiProtocolError as exc:
                log.warning("AMI: dropped a malformed event: %s", exc)
                continue
            if handler is not None:
                try:
                    handler(event)
                except Exception:  # noqa: BLE001 - one bad handler must never cut the link
                    log.exception("AMI: event handler failed on %s", event.name)

    def _answers_action(self, frame: Frame) -> bool:
        """True if the frame is the answer (or a list item) of an action we wait for."""
        action_id = frame.action_id
        pending = self.pending.get(action_id) if action_id else None
        if pending is None:
            return False
        if frame.response is not None and pending.response is None:
            pending.response = frame
            if frame.get("EventList", "").lower() != "start":
                self._resolve(action_id, pending)
            return True
        if frame.event is not None and pending.response is not None:
            if frame.get("EventList", "").lower() == "complete":
                self._resolve(action_id, pending)
            else:
                pending.items.append(frame)
            return True
        return False

    def _resolve(self, action_id: str, pending: _Pending) -> None:
        self.pending.pop(action_id, None)
        if not pending.future.done():
            pending.future.set_result(AmiResponse(pending.response, tuple(pending.items)))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_pending(exc)
        if not self.closed:
            self.closed = True
            if self.factory is not None:
                self.factory.connection_lost(exc)

    def close(self) -> None:
        self._fail_pending(None)
        if not self.closed:
            self.closed = True
            self.transport.close()

    def _fail_pending(self, exc: Exception | None) -> None:
        pending, self.pending = self.pending, {}
        for action_id, p in pending.items():
            if not p.future.done():
                p.future.set_exception(AmiLinkLost(f"AMI link lost before {p.action} ({action_id}) was answered"))
