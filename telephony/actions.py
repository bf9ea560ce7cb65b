"""The action layer: the only code that sends AMI actions. Values are checked by the codec."""

from __future__ import annotations

import logging

from telephony.ami_client import AmiClient, AmiError
from telephony.ami_protocol import AmiResponse

log = logging.getLogger("hotline.actions")


class PbxActions:
    def __init__(self, client: AmiClient) -> None:
        self.client = client

    async def queue_add(
        self,
        queue: str,
        interface: str,
        member_name: str,
        state_interface: str | None = None,
        penalty: int = 0,
        paused: bool = False,
        reason: str | None = None,
    ) -> bool:
        """Add a member; True if added, False if it was already there. Other errors raise."""
        resp = await self.client.send_action(
            "QueueAdd",
            {
                "Queue": queue,
                "Interface": interface,
                "MemberName": member_name,
                "StateInterface": state_interface or interface,
                "Penalty": penalty,
                "Paused": "true" if paused else "false",
                "Reason": reason if paused else None,
            },
        )
        if resp.success:
            return True
        if "Already there" in resp.message:
            return False
        raise AmiError(f"QueueAdd {interface} to {queue}: {resp.message}")

    async def queue_remove(self, queue: str, interface: str) -> bool:
        resp = await self.client.send_action("QueueRemove", {"Queue": queue, "Interface": interface})
        if resp.success:
            return True
        if "Not there" in resp.message:
            return False
        raise AmiError(f"QueueRemove {interface} from {queue}: {resp.message}")

    async def queue_pause(self, interface: str, paused: bool, reason: str | None = None, queue: str | None = None) -> None:
        await self._checked("QueuePause", {"Interface": interface, "Paused": "true" if paused else "false",
                                           "Reason": reason, "Queue": queue}, about=interface)

    async def queue_status(self, queue: str | None = None) -> AmiResponse:
        return await self.client.send_action("QueueStatus", {"Queue": queue} if queue else None)

    async def queue_penalty(self, interface: str, penalty: int, queue: str | None = None) -> None:
        await self._checked("QueuePenalty", {"Interface": interface, "Penalty": penalty, "Queue": queue},
                            about=interface)

    async def core_status(self) -> AmiResponse:
        """CoreStatus: CoreStartupDate/Time tell an Asterisk restart from a reconnect."""
        return await self._checked("CoreStatus")

    async def core_show_channels(self) -> AmiResponse:
        """CoreShowChannels: one CoreShowChannel item per live channel."""
        return await self._checked("CoreShowChannels")

    # -- calls: transfers, originates, hang-ups (leader hotline, callbacks, supervision) --------

    async def _checked(self, action: str, fields: dict | None = None, *, about: str | None = None) -> AmiResponse:
        """Send an action; an error answer raises AmiError naming the action and what it was about."""
        resp = await self.client.send_action(action, fields)
        if not resp.success:
            raise AmiError(f"{action} {about}: {resp.message}" if about else f"{action}: {resp.message}")
        return resp

    async def _call_action(self, action: str, fields: dict) -> AmiResponse:
        return await self._checked(action, fields, about=fields.get("Channel"))

    async def blind_transfer(self, channel: str, context: str, exten: str) -> AmiResponse:
        """Transfer the party bridged with ``channel`` (a seat's channel, AgentConnect DestChannel)
        to ``exten@context``; app_queue then reports AgentComplete with Reason: transfer."""
        return await self._call_action("BlindTransfer", {"Channel": channel, "Context": context, "Exten": exten})

    async def atxfer(self, channel: str, context: str, exten: str) -> AmiResponse:
        """Attended transfer from a seat's channel: consult ``exten@context``; it completes when the
        seat hangs up (AttendedTransfer event)."""
        return await self._call_action("Atxfer", {"Channel": channel, "Context": context, "Exten": exten})

    async def redirect(self, channel: str, context: str, exten: str, priority: int = 1) -> AmiResponse:
        return await self._call_action(
            "Redirect", {"Channel": channel, "Context": context, "Exten": exten, "Priority": priority})

    async def originate(
        self,
        channel: str,
        *,
        context: str | None = None,
        exten: str | None = None,
        priority: int = 1,
        application: str | None = None,
        data: str | None = None,
        caller_id: str | None = None,
        timeout_ms: int = 30000,
        variables: dict[str, str] | None = None,
    ) -> AmiResponse:
        """Originate ``channel`` first, then an extension or an application (Async: the result comes
        later as an OriginateResponse event with this action's ActionID, kept in the answer)."""
        if (application is None) == (exten is None):
            raise ValueError("originate needs either exten (with context) or application")
        for name, value in (variables or {}).items():
            # Asterisk splits a Variable header on ',' too: a comma would start another variable.
            if "," in name or "," in str(value) or "=" in name:
                raise ValueError(f"originate variable {name!r}: ',' and '=' are not allowed")
        fields: dict[str, object] = {"Channel": channel, "Timeout": timeout_ms, "Async": "true",
                                     "CallerID": caller_id}
        if application is not None:
            fields.update(Application=application, Data=data)
        else:
            fields.update(Context=context, Exten=exten, Priority=priority)
        if variables:
            fields["Variable"] = [f"{k}={v}" for k, v in variables.items()]   # one header each
        return await self._call_action("Originate", fields)

    async def hangup(self, channel: str, cause: int = 16) -> AmiResponse:
        return await self._call_action("Hangup", {"Channel": channel, "Cause": cause})
