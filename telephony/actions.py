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
        resp = await self.client.send_action(
            "QueuePause",
            {"Interface": interface, "Paused": "true" if paused else "false", "Reason": reason, "Queue": queue},
        )
        if not resp.success:
            raise AmiError(f"QueuePause {interface}: {resp.message}")

    async def queue_status(self, queue: str | None = None) -> AmiResponse:
        return await self.client.send_action("QueueStatus", {"Queue": queue} if queue else None)

    async def queue_penalty(self, interface: str, penalty: int, queue: str | None = None) -> None:
        resp = await self.client.send_action(
            "QueuePenalty", {"Interface": interface, "Penalty": penalty, "Queue": queue})
        if not resp.success:
            raise AmiError(f"QueuePenalty {interface}: {resp.message}")

    async def core_status(self) -> AmiResponse:
        """CoreStatus: CoreStartupDate/Time tell an Asterisk restart from a reconnect."""
        resp = await self.client.send_action("CoreStatus")
        if not resp.success:
            raise AmiError(f"CoreStatus: {resp.message}")
        return resp

    async def core_show_channels(self) -> AmiResponse:
        """CoreShowChannels: one CoreShowChannel item per live channel."""
        resp = await self.client.send_action("CoreShowChannels")
        if not resp.success:
            raise AmiError(f"CoreShowChannels: {resp.message}")
        return resp
