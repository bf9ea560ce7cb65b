"""Basic bridges as transfers and spies need them: create, enter, leave, destroy, snapshots.

Counts come from the bus's record of who is in each bridge (``EventBus.bridges``), so callers
need not track them. ``enter`` applies Asterisk's Linkedid rule first (bridge.c
``bridge_channel_update_linkedids``): every channel in a bridge takes the oldest Linkedid among
them, the one whose Uniqueid was created first. Channels a call creates itself inherit the
Linkedid of the channel that requested them, so the rule only changes something when a channel
of another call (another Linkedid) joins.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from telephony.simulator.chanevents import bridge_event

if TYPE_CHECKING:
    from telephony.simulator.bus import EventBus
    from telephony.simulator.channels import Channel


def _age(linkedid: str) -> tuple[int, int]:
    epoch, _, n = linkedid.partition(".")
    try:
        return int(epoch), int(n or 0)
    except ValueError:
        return (2**62, 0)


def members(bus: EventBus, bridge: str) -> list[Channel]:
    return list(bus.bridges.get(bridge, []))


def create(bus: EventBus) -> str:
    bridge = str(uuid.uuid4())
    bridge_event(bus, "BridgeCreate", bridge, 0)
    return bridge


def enter(bus: EventBus, bridge: str, ch: Channel) -> None:
    inside = [c for c in members(bus, bridge) if c is not ch]
    oldest = min((c.linkedid for c in [*inside, ch]), key=_age)
    for c in [*inside, ch]:
        c.linkedid = oldest
    ch.bridge_id = bridge
    bridge_event(bus, "BridgeEnter", bridge, len(inside) + 1, ch)


def leave(bus: EventBus, bridge: str, ch: Channel) -> None:
    left = len([c for c in members(bus, bridge) if c is not ch])
    bridge_event(bus, "BridgeLeave", bridge, left, ch)


def destroy(bus: EventBus, bridge: str) -> None:
    bridge_event(bus, "BridgeDestroy", bridge, len(members(bus, bridge)))


def snapshot(bus: EventBus, bridge: str, prefix: str = "") -> list[tuple[str, str]]:
    """ast_manager_build_bridge_state_string_prefix: the bridge block of transfer events."""
    return [(f"{prefix}BridgeUniqueid", bridge), (f"{prefix}BridgeType", "basic"),
            (f"{prefix}BridgeTechnology", "simple_bridge"), (f"{prefix}BridgeCreator", "<unknown>"),
            (f"{prefix}BridgeName", "<unknown>"), (f"{prefix}BridgeNumChannels", str(len(members(bus, bridge)))),
            (f"{prefix}BridgeVideoSourceMode", "none")]
