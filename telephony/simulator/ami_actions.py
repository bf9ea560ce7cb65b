"""The AMI actions the simulator answers, with the exact texts of the captures.

How this works: each handler takes the action's frame and returns the frames to write: one
response, or for list actions the ``EventList: start`` response, the items (each with the
ActionID, where Asterisk puts it) and the ``...Complete`` event with ``ListItems``. Handlers
change state through the core, whose events the session lets out after the response.
Originate is the one coroutine (a synchronous Originate answers when the seat has).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Awaitable, Callable, Union

from telephony.ami_codec import Frame
from telephony.simulator.chanevents import varset
from telephony.simulator.channels import Channel
from telephony.simulator.originate import OriginateCall, OriginateRequest
from telephony.simulator.queue import DEVICE_STATES, INVALID, NOT_INUSE, UNAVAILABLE, UNKNOWN

if TYPE_CHECKING:
    from telephony.simulator.core import PbxCore

log = logging.getLogger("hotline.simulator.actions")

Headers = list[tuple[str, str]]
Result = Union[list[Headers], Awaitable[list[Headers]]]
TRUE = ("yes", "true", "y", "t", "1", "on")
STATE_TEXT = {0: "Unknown", 1: "Not in use", 2: "In use", 3: "Busy", 4: "Invalid", 5: "Unavailable", 6: "Ringing",
              7: "Ring+Inuse", 8: "On Hold"}
MAX_GLOBALS = 10_000
MAX_ORIGINATES = 1000


def response(frame: Frame, kind: str = "Success", message: str | None = None, extra: Headers = ()) -> Headers:
    aid = frame.get("ActionID")
    out = [("Response", kind)]
    if aid:
        out.append(("ActionID", aid))
    if message is not None:
        out.append(("Message", message))
    return [*out, *extra]


def error(frame: Frame, message: str) -> list[Headers]:
    return [response(frame, "Error", message)]


def ack(frame: Frame, message: str) -> list[Headers]:
    return [response(frame, "Success", message)]


def _aid(frame: Frame) -> Headers:
    aid = frame.get("ActionID")
    return [("ActionID", aid)] if aid else []


def _int(text: str | None, default: int = 0) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        return default


def _true(text: str | None) -> bool:
    return (text or "").strip().lower() in TRUE


class AmiActions:
    def __init__(self, core: PbxCore, tasks: set[asyncio.Task]) -> None:
        self.core = core
        self.tasks = tasks  # the simulator's running calls: Originate tasks join them
        self.handlers: dict[str, Callable[[Frame], Result]] = {
            "ping": self.ping, "corestatus": self.core_status, "coresettings": self.core_settings,
            "coreshowchannels": self.core_show_channels, "queuestatus": self.queue_status,
            "queuesummary": self.queue_summary, "queueadd": self.queue_add, "queueremove": self.queue_remove,
            "queuepause": self.queue_pause, "queuepenalty": self.queue_penalty, "getvar": self.getvar,
            "setvar": self.setvar, "hangup": self.hangup, "originate": self.originate, "command": self.command,
            "events": self.events,
        }

    # system

    def ping(self, frame: Frame) -> list[Headers]:
        return [response(frame, extra=[("Ping", "Pong"), ("Timestamp", f"{self.core.clock.now():.6f}")])]

    def core_status(self, frame: Frame) -> list[Headers]:
        started = time.localtime(self.core.started)
        date, clock = time.strftime("%Y-%m-%d", started), time.strftime("%H:%M:%S", started)
        live = sum(1 for c in self.core.channels.live.values() if c.owner is not None)
        return [response(frame, extra=[("CoreStartupDate", date), ("CoreStartupTime", clock),
                                       ("CoreReloadDate", date), ("CoreReloadTime", clock),
                                       ("CoreCurrentCalls", str(live)),
                                       ("CoreProcessedCalls", str(self.core.channels.processed))])]

    def core_settings(self, frame: Frame) -> list[Headers]:
        return [response(frame, extra=[
            ("AMIversion", "11.0.0"), ("AsteriskVersion", "22.10.1"), ("SystemName", ""), ("CoreMaxCalls", "0"),
            ("CoreMaxLoadAvg", "0.000000"), ("CoreRunUser", ""), ("CoreRunGroup", ""), ("CoreMaxFilehandles", "0"),
            ("CoreRealTimeEnabled", "No"), ("CoreCDRenabled", "Yes"), ("CoreHTTPenabled", "No"),
            ("SoundsSearchCustomDir", "No")])]

    def core_show_channels(self, frame: Frame) -> list[Headers]:
        now = self.core.clock.now()
        items = []
        for chan in list(self.core.channels.live.values()):
            d = max(0, int(now - chan.created))
            # action_coreshowchannels: the snapshot block, Application, ApplicationData, Duration, BridgeId
            items.append([("Event", "CoreShowChannel"), *_aid(frame), *chan.fields(), ("Application", chan.app),
                          ("ApplicationData", chan.appdata),
                          ("Duration", f"{d // 3600:02d}:{d % 3600 // 60:02d}:{d % 60:02d}"),
                          ("BridgeId", chan.bridge_id)])
        return self._list(frame, "Channels will follow", "CoreShowChannelsComplete", items)

    def _list(self, frame: Frame, message: str, complete: str, items: list[Headers]) -> list[Headers]:
        start = response(frame, extra=[("EventList", "start"), ("Message", message)])
        end = [("Event", complete), *_aid(frame), ("EventList", "Complete"), ("ListItems", str(len(items)))]
        return [start, *items, end]

    # queues

    def queue_status(self, frame: Frame) -> list[Headers]:
        only, member_filter = frame.get("Queue"), frame.get("Member")
        now, items = self.core.clock.now(), []
        for q in self.core.queues.values():
            if only and q.name != only:
                continue
            items.append([("Event", "QueueParams"), *q.params_item(), *_aid(frame)])
            for m in q.members.values():
                if not member_filter or member_filter in (m.interface, m.name):
                    items.append([("Event", "QueueMember"), *m.status_item(self.core.member_status(m)), *_aid(frame)])
            for pos, entry in enumerate(q.entries, 1):
                c2: Channel = entry.call.c2
                cid = c2.fields()[3:7]  # CallerIDNum, CallerIDName, ConnectedLineNum, ConnectedLineName
                items.append([("Event", "QueueEntry"), ("Queue", q.name), ("Position", str(pos)),
                              ("Channel", c2.name), ("Uniqueid", c2.uniqueid), *cid,
                              ("Wait", str(int(now - entry.joined))), ("Priority", str(entry.prio)), *_aid(frame)])
        return self._list(frame, "Queue status will follow", "QueueStatusComplete", items)

    def queue_summary(self, frame: Frame) -> list[Headers]:
        only, now, items = frame.get("Queue"), self.core.clock.now(), []
        for q in self.core.queues.values():
            if only and q.name != only:
                continue
            statuses = [(m, self.core.member_status(m)) for m in q.members.values()]
            logged = [(m, s) for m, s in statuses if s not in (UNAVAILABLE, INVALID)]
            avail = sum(1 for m, s in logged if s in (NOT_INUSE, UNKNOWN) and not m.paused)
            longest = max((int(now - e.joined) for e in q.entries), default=0)
            items.append([("Event", "QueueSummary"), ("Queue", q.name), ("LoggedIn", str(len(logged))),
                          ("Available", str(avail)), ("Callers", str(len(q.entries))),
                          ("HoldTime", str(q.stats.holdtime)), ("TalkTime", str(q.stats.talktime)),
                          ("LongestHoldTime", str(longest)), *_aid(frame)])
        return self._list(frame, "Queue summary will follow", "QueueSummaryComplete", items)

    def queue_add(self, frame: Frame) -> list[Headers]:
        queue, iface = frame.get("Queue") or "", frame.get("Interface") or ""
        if not queue:
            return error(frame, "'Queue' not specified.")
        if not iface:
            return error(frame, "'Interface' not specified.")
        penalty = max(0, _int(frame.get("Penalty")))
        paused = _true(frame.get("Paused"))
        failed = self.core.add_member(queue, iface, frame.get("MemberName") or "", frame.get("StateInterface") or "",
                                      penalty, paused, frame.get("Reason") or "", max(0, _int(frame.get("Wrapuptime"))))
        return error(frame, failed) if failed else ack(frame, "Added interface to queue")

    def queue_remove(self, frame: Frame) -> list[Headers]:
        queue, iface = frame.get("Queue") or "", frame.get("Interface") or ""
        if not queue or not iface:
            return error(frame, "Need 'Queue' and 'Interface' parameters.")
        failed = self.core.remove_member(queue, iface)
        return error(frame, failed) if failed else ack(frame, "Removed interface from queue")

    def queue_pause(self, frame: Frame) -> list[Headers]:
        iface, paused_s = frame.get("Interface") or "", frame.get("Paused") or ""
        if not iface or not paused_s:
            return error(frame, "Need 'Interface' and 'Paused' parameters.")
        paused = _true(paused_s)
        if not self.core.pause_member(iface, paused, frame.get("Reason") or "", frame.get("Queue") or None):
            return error(frame, "Interface not found")
        return ack(frame, "Interface paused successfully" if paused else "Interface unpaused successfully")

    def queue_penalty(self, frame: Frame) -> list[Headers]:
        iface, penalty = frame.get("Interface") or "", frame.get("Penalty") or ""
        if not iface:
            return error(frame, "'Interface' not set.")
        if not penalty:
            return error(frame, "'Penalty' not set.")
        if _int(penalty, -1) < 0 or not self.core.set_penalty(iface, _int(penalty), frame.get("Queue") or None):
            return error(frame, "Invalid interface, queuename or penalty")
        return ack(frame, "Interface penalty set successfully")

    # channels and variables

    def _channel(self, frame: Frame) -> Channel | None:
        return self.core.channels.live.get(frame.get("Channel") or "")

    def getvar(self, frame: Frame) -> list[Headers]:
        name, chan_name = frame.get("Variable") or "", frame.get("Channel") or ""
        if not name:
            return error(frame, "No variable specified")
        if chan_name:
            chan = self._channel(frame)
            if chan is None:
                return error(frame, "No such channel")
            getter = getattr(chan.owner, "get_var", None)
            own = getter is not None and chan is getattr(chan.owner, "c2", None)
            value = getter(name) if own else chan.variables.get(name)
        elif name.upper().startswith("DEVICE_STATE(") and name.endswith(")"):
            status = self.core.devices.status(name[13:-1])
            value = next((k for k, v in DEVICE_STATES.items() if v == status), "UNKNOWN")
        else:
            value = self.core.globals.get(name)
        return [response(frame, extra=[("Variable", name), ("Value", value or "")])]

    def setvar(self, frame: Frame) -> list[Headers]:
        name, value, chan_name = frame.get("Variable") or "", frame.get("Value") or "", frame.get("Channel") or ""
        if not name:
            return error(frame, "No variable specified")
        if chan_name:
            chan = self._channel(frame)
            if chan is None:
                return error(frame, "No such channel")
            setter = getattr(chan.owner, "set_var", None)
            if setter and chan is getattr(chan.owner, "c2", None):
                setter(name, value)
            else:
                varset(self.core.bus, chan, name, value)
        elif name.upper().startswith("DEVICE_STATE(") and name.endswith(")"):
            self.core.set_device_state(name[13:-1], DEVICE_STATES.get(value.upper(), UNKNOWN))
        elif name in self.core.globals or len(self.core.globals) < MAX_GLOBALS:
            self.core.globals[name] = value
        return ack(frame, "Variable Set")

    def hangup(self, frame: Frame) -> list[Headers]:
        if not frame.get("Channel"):
            return error(frame, "No channel specified")
        chan = self._channel(frame)
        if chan is None or chan.owner is None:
            return error(frame, "No such channel")
        chan.owner.hangup_action(chan)
        return ack(frame, "Channel Hungup")

    def events(self, frame: Frame) -> list[Headers]:
        return [response(frame, extra=[("Events", "Off" if (frame.get("EventMask") or "").lower() == "off" else "On")])]

    def command(self, frame: Frame) -> list[Headers]:
        cmd = " ".join((frame.get("Command") or "").split())
        if cmd.lower().startswith("queue show"):
            name = cmd[10:].strip()
            lines = []
            for q in self.core.queues.values():
                if not name or q.name == name:
                    lines += self._queue_show(q)
            lines = lines or [f"No such queue: {name}."]
            return [response(frame, message="Command output follows", extra=[("Output", line) for line in lines])]
        return [response(frame, "Error", "Command output follows",
                         [("Output", f"No such command '{cmd[:80]}' (type 'core show help {cmd[:80]}' for other "
                                     "possible commands)")])]

    def _queue_show(self, q) -> list[str]:
        now, s = self.core.clock.now(), q.stats
        perf, perf2 = q.sl_perf()
        out = [f"{q.name} has {len(q.entries)} calls (max {'unlimited' if not q.maxlen else q.maxlen}) in "
               f"'{q.strategy}' strategy ({s.holdtime}s holdtime, {s.talktime}s talktime), W:{q.weight}, "
               f"C:{s.completed}, A:{s.abandoned}, SL:{perf}%, SL2:{perf2}% within {q.servicelevel}s"]
        out.append("   Members: " if q.members else "   No Members")
        for m in q.members.values():
            paused = f" (paused:{m.paused_reason} was {int(now - m.last_pause)} secs ago)" if m.paused else ""
            calls = (f"has taken {m.calls_taken} calls (last was {int(now - m.last_call)} secs ago)" if m.calls_taken
                     else "has taken no calls yet")
            via = "" if m.state_interface == m.interface else f" from {m.state_interface}"
            out.append(f"      {m.name} ({m.interface}{via})"
                       f" (ringinuse {'enabled' if q.ringinuse else 'disabled'}) (dynamic){paused}"
                       f" ({STATE_TEXT.get(self.core.member_status(m), 'Unknown')}) {calls}"
                       f" (login was {int(now - m.login_time)} secs ago)")
        if q.entries:
            out.append("   Callers: ")
            for pos, e in enumerate(q.entries, 1):
                w = int(now - e.joined)
                out.append(f"      {pos}. {e.call.c2.name} (wait: {w // 60}:{w % 60:02d}, prio: {e.prio})")
        else:
            out.append("   No Callers")
        return [*out, "", ""]

    # originate

    def originate(self, frame: Frame) -> Result:
        chan = frame.get("Channel") or ""
        if not chan:
            return error(frame, "Channel not specified")
        if "/" not in chan:
            return error(frame, "Invalid channel")
        timeout_s = frame.get("Timeout")
        timeout = _int(timeout_s, -1) if timeout_s else 30000
        if timeout < 0:
            return error(frame, "Invalid timeout")
        app, exten, context = frame.get("Application") or "", frame.get("Exten") or "", frame.get("Context") or ""
        priority = frame.get("Priority") or ""
        if not app and not (exten and context and priority):
            return error(frame, "Originate with 'Exten' requires 'Context' and 'Priority'")
        if priority and not priority.isdigit() and not app:
            return error(frame, "Invalid priority")
        cid = frame.get("CallerID") or ""
        cid_name, cid_num = "", cid
        if "<" in cid and cid.endswith(">"):
            cid_name, _, cid_num = cid[:-1].partition("<")
            cid_name = cid_name.strip().strip('"')
        variables = []
        for raw in frame.get_all("Variable"):
            for part in raw.split(","):
                name, sep, value = part.partition("=")
                if sep and name.strip():
                    variables.append((name.strip(), value))
        if len(self.tasks) >= MAX_ORIGINATES:
            return error(frame, "Originate failed")
        is_async = _true(frame.get("Async"))
        req = OriginateRequest(chan, context, exten, priority or "1", app, frame.get("Data") or "",
                               timeout / 1000.0, cid_num.strip(), cid_name, tuple(variables[:64]),
                               frame.get("ActionID"), is_async)
        task = asyncio.ensure_future(OriginateCall(self.core, req).run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if is_async:
            return ack(frame, "Originate successfully queued")

        async def wait() -> list[Headers]:
            ok = await asyncio.shield(task)
            return ack(frame, "Originate successfully queued") if ok else error(frame, "Originate failed")
        return wait()
