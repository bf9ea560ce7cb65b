"""The transfer actions: BlindTransfer, Redirect and Atxfer, answered as manager.c does.

How this works: each handler checks its headers with Asterisk's error texts, finds the channel,
and when the channel is a seat talking with a caller (``InboundCall.in_bridge``) records a
``TransferRequest`` on the call, whose task carries it out (transfer.py). What the simulator
cannot carry out is refused the way Asterisk refuses a channel that is not bridged.
- BlindTransfer (Channel = the seat's channel in the caller's bridge, Exten, Context): sets
  BLINDTRANSFER on the caller, emits BlindTransfer (Result Success, IsExternal Yes: an AMI transfer
  is external to the bridge's DTMF features) and answers "Transfer succeeded". A channel in no
  bridge: BlindTransfer Result Invalid and "Transfer invalid".
- Redirect (Channel = the caller's channel, Context, Exten, Priority): "Redirect successful"; the
  seat is hung up as the bridge dissolves.
- Atxfer (Channel = the seat's channel, Exten, Context): queues the atxfer DTMF code and the
  number on the channel, sets TRANSFER_CONTEXT, answers "Atxfer successfully queued".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from telephony.ami_codec import Frame
from telephony.simulator import bridges
from telephony.simulator.ami_actions import Headers, ack, error
from telephony.simulator.bus import CALL
from telephony.simulator.chanevents import varset
from telephony.simulator.channels import Channel
from telephony.simulator.transfer import TransferRequest

if TYPE_CHECKING:
    from telephony.simulator.core import PbxCore


def _talking_call(chan: Channel):
    """The inbound call whose seat ``chan`` is, while that seat talks with the caller."""
    call = chan.owner
    in_bridge = getattr(call, "in_bridge", None)
    if in_bridge is None or in_bridge[1] is not chan or getattr(call, "transfer", None) is not None:
        return None
    return call


def _blind_event(core: PbxCore, result: str, transferer: Channel, transferee: Channel | None,
                 bridge: str | None, context: str, exten: str) -> None:
    fields = [("Result", result), *transferer.fields("Transferer")]
    if transferee is not None:
        fields += transferee.fields("Transferee")
    if bridge:
        fields += bridges.snapshot(core.bus, bridge)
    core.bus.emit("BlindTransfer", CALL, [*fields, ("IsExternal", "Yes"), ("Context", context),
                                          ("Extension", exten)])


def blind_transfer(core: PbxCore, frame: Frame) -> list[Headers]:
    name, exten, context = frame.get("Channel") or "", frame.get("Exten") or "", frame.get("Context") or ""
    if not name:
        return error(frame, "No channel specified")
    if not exten:
        return error(frame, "No extension specified")
    chan = core.channels.live.get(name)
    if chan is None:
        return error(frame, "Channel specified does not exist")
    context = context or chan.context
    if not chan.bridge_id:
        _blind_event(core, "Invalid", chan, None, None, context, exten)
        return error(frame, "Transfer invalid")
    call = _talking_call(chan)
    if call is None:  # e.g. the caller's own channel, or a seat in a consultation: not simulated
        _blind_event(core, "Fail", chan, None, chan.bridge_id, context, exten)
        return error(frame, "Transfer failed")
    bridge, c2 = chan.bridge_id, call.c2
    varset(core.bus, chan, "BRIDGEPEER", c2.name)
    varset(core.bus, c2, "BLINDTRANSFER", chan.name)
    _blind_event(core, "Success", chan, c2, bridge, context, exten)
    call.request_transfer(TransferRequest("blind", context, exten, chan))
    return ack(frame, "Transfer succeeded")


def redirect(core: PbxCore, frame: Frame) -> list[Headers]:
    name, context = frame.get("Channel") or "", frame.get("Context") or ""
    exten, priority = frame.get("Exten") or "", (frame.get("Priority") or "").strip()
    if not name:
        return error(frame, "Channel not specified")
    if frame.get("ExtraChannel"):
        return error(frame, "Redirect failed")  # a dual redirect is not simulated
    if not context:
        return error(frame, "Context not specified")
    if not exten:
        return error(frame, "Exten not specified")
    if not priority:
        return error(frame, "Priority not specified")
    if not priority.isdigit() or int(priority) < 1:
        return error(frame, "Priority is invalid")
    chan = core.channels.live.get(name)
    if chan is None:
        return error(frame, f"Channel does not exist: {name[:200]}")
    call = chan.owner
    in_bridge = getattr(call, "in_bridge", None)
    if chan is not getattr(call, "c2", None) or in_bridge is None or call.transfer is not None or int(priority) != 1:
        return error(frame, "Redirect failed")  # only the caller talking to a seat is simulated
    call.request_transfer(TransferRequest("redirect", context, exten))
    return ack(frame, "Redirect successful")


def atxfer(core: PbxCore, frame: Frame) -> list[Headers]:
    name, exten, context = frame.get("Channel") or "", frame.get("Exten") or "", frame.get("Context") or ""
    if not name:
        return error(frame, "No channel specified")
    if not exten:
        return error(frame, "No extension specified")
    chan = core.channels.live.get(name)
    if chan is None:
        return error(frame, "Channel specified does not exist")
    if context:
        varset(core.bus, chan, "TRANSFER_CONTEXT", context)
    call = _talking_call(chan)
    if call is not None:  # elsewhere the digits reach no transfer feature: nothing happens
        call.request_transfer(TransferRequest("attended", context or chan.context, exten, chan))
    return ack(frame, "Atxfer successfully queued")


def handlers(core: PbxCore) -> dict[str, Callable[[Frame], list[Headers]]]:
    return {"blindtransfer": lambda f: blind_transfer(core, f), "redirect": lambda f: redirect(core, f),
            "atxfer": lambda f: atxfer(core, f)}
