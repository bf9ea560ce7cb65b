"""The channel events of the captures, one function each, fields in Asterisk's order.

Each function updates the channel snapshot first (state, priority, application...) and then
emits, so the event shows the channel as Asterisk would at that moment.
"""

from __future__ import annotations

from telephony.simulator import cel
from telephony.simulator.bus import CALL, DIALPLAN, DTMF, EventBus
from telephony.simulator.channels import CAUSE_TEXT, UP, Channel, ChannelRegistry
from telephony.simulator.queue import INUSE, NOT_INUSE


def newchannel(bus: EventBus, ch: Channel) -> None:
    cel.cel(bus, ch, "CHAN_START")
    bus.emit("Newchannel", CALL, ch.fields())


def newstate(bus: EventBus, ch: Channel, state: int) -> None:
    if state == UP and ch.state != UP:
        cel.cel(bus, ch, "ANSWER")
    ch.state = state
    bus.emit("Newstate", CALL, ch.fields())
    device = cel.local_device(ch)
    if device is not None:  # a Local channel's state change republishes its device (not cached)
        cel.device_state(bus, device, INUSE)


def newcallerid(bus: EventBus, ch: Channel, num: str, name: str) -> None:
    ch.cid_num, ch.cid_name = num, name
    bus.emit("NewCallerid", CALL, [*ch.fields(), ("CID-CallingPres", "0 (Presentation Allowed, Not Screened)")])


def newconnectedline(bus: EventBus, ch: Channel, num: str, name: str) -> None:
    ch.conn_num, ch.conn_name = num, name
    bus.emit("NewConnectedLine", CALL, ch.fields())


def newexten(bus: EventBus, ch: Channel, app: str, data: str = "", *, priority: int | None = None,
             context: str | None = None, exten: str | None = None) -> None:
    if context is not None:
        ch.context = context
    if exten is not None:
        ch.exten = exten
    if priority is not None:
        ch.priority = priority
    ch.app, ch.appdata = app, data
    bus.emit("Newexten", DIALPLAN, [*ch.fields(), ("Extension", ch.exten), ("Application", app), ("AppData", data)])


def varset(bus: EventBus, ch: Channel, name: str, value: str) -> None:
    ch.variables[name.lstrip("_")] = value
    bus.emit("VarSet", DIALPLAN, [*ch.fields(), ("Variable", name), ("Value", value)])


def hangup_handler(bus: EventBus, ch: Channel, run: bool, handler: str = "hotline-hangup,s,1") -> None:
    bus.emit("HangupHandlerRun" if run else "HangupHandlerPush", DIALPLAN, [*ch.fields(), ("Handler", handler)])


def hangup_request(bus: EventBus, ch: Channel, cause: int = 16, soft: bool = False) -> None:
    bus.emit("SoftHangupRequest" if soft else "HangupRequest", CALL, [*ch.fields(), ("Cause", str(cause))])


def hangup(bus: EventBus, registry: ChannelRegistry, ch: Channel, cause: int = 16,
           device_state: bool = True) -> None:
    """CEL HANGUP, CHAN_END (LINKEDID_END for the last channel of the call), then Hangup; a Local
    channel's device is published after (unless the caller does it later: ``device_state``)."""
    if ch.gone:
        return
    registry.forget(ch)
    cel.hangup_cels(bus, ch, cause, not registry.linkedid_live(ch.linkedid))
    bus.emit("Hangup", CALL, [*ch.fields(), ("Cause", str(cause)), ("Cause-txt", CAUSE_TEXT.get(cause, "Unknown"))])
    if device_state:
        local_released(bus, registry, ch)


def local_released(bus: EventBus, registry: ChannelRegistry, ch: Channel) -> None:
    device = cel.local_device(ch)
    if device is not None:
        cel.device_state(bus, device, INUSE if registry.local_in_use(device) else NOT_INUSE)


def local_bridge(bus: EventBus, one: Channel, two: Channel, optimize: bool) -> None:
    bus.emit("LocalBridge", CALL, [*one.fields("LocalOne"), *two.fields("LocalTwo"), ("Context", one.context),
                                   ("Exten", one.exten), ("LocalOptimization", "Yes" if optimize else "No")])


def dial_begin(bus: EventBus, caller: Channel | None, dest: Channel, dialstring: str) -> None:
    head = caller.fields() if caller is not None else []
    bus.emit("DialBegin", CALL, [*head, *dest.fields("Dest"), ("DialString", dialstring)])


def dial_end(bus: EventBus, caller: Channel | None, dest: Channel, status: str) -> None:
    head = caller.fields() if caller is not None else []
    bus.emit("DialEnd", CALL, [*head, *dest.fields("Dest"), ("DialStatus", status)])


def dtmf(bus: EventBus, ch: Channel, digit: str) -> None:
    bus.emit("DTMFBegin", DTMF, [*ch.fields(), ("Digit", digit), ("Direction", "Received")])
    bus.emit("DTMFEnd", DTMF, [*ch.fields(), ("Digit", digit), ("DurationMs", "100"), ("Direction", "Received")])
    cel.cel(bus, ch, "DTMF", cel.extra_json(digit=digit, duration_ms=100))


def moh(bus: EventBus, ch: Channel, start: bool) -> None:
    cel.stream(bus, ch, start, moh_class="default")
    if start:
        bus.emit("MusicOnHoldStart", CALL, [*ch.fields(), ("Class", "default")])
    else:
        bus.emit("MusicOnHoldStop", CALL, ch.fields())


BRIDGE_HEAD = (("BridgeType", "basic"), ("BridgeTechnology", "simple_bridge"), ("BridgeCreator", "<unknown>"),
               ("BridgeName", "<unknown>"))


def bridge_event(bus: EventBus, name: str, bridge_id: str, count: int, ch: Channel | None = None) -> None:
    fields = [("BridgeUniqueid", bridge_id), *BRIDGE_HEAD, ("BridgeNumChannels", str(count)),
              ("BridgeVideoSourceMode", "none")]
    if ch is not None:
        fields += ch.fields()
        _bridge_cel(bus, name, bridge_id, ch)
    elif name == "BridgeDestroy":
        bus.bridges.pop(bridge_id, None)
    bus.emit(name, CALL, fields)


def _bridge_cel(bus: EventBus, name: str, bridge_id: str, ch: Channel) -> None:
    """BRIDGE_ENTER / BRIDGE_EXIT; Peer: the other channels in the bridge at that moment."""
    inside = bus.bridges.setdefault(bridge_id, [])
    if ch in inside:
        inside.remove(ch)
    peer = ",".join(c.name for c in inside)
    extra = cel.extra_json(bridge_id=bridge_id, bridge_technology="simple_bridge")
    if name == "BridgeEnter":
        cel.cel(bus, ch, "BRIDGE_ENTER", extra, peer)
        inside.append(ch)
    elif name == "BridgeLeave":
        cel.cel(bus, ch, "BRIDGE_EXIT", extra, peer)
        ch.bridge_id = ""
        if not inside:
            bus.bridges.pop(bridge_id, None)
