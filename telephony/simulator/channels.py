"""Channels as Asterisk shows them in AMI: names, Uniqueids, and the standard header block.

Names follow Asterisk: ``Local/<exten>@<context>-<8 hex>;1`` and ``;2`` for Local channels (one
counter for all Local channels), ``<Tech>/<resource>-<8 hex>`` for device channels (one counter
per technology). A Uniqueid is ``<creation epoch>.<n>``, n counting every channel since start.
The Linkedid of every channel of a call is the Uniqueid of its oldest channel (the ``;1``).
``fields(prefix)`` gives the block every channel event carries, in Asterisk's order, with the
prefix used by LocalBridge (``LocalOne``), dial and agent events (``Dest``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from telephony.simulator.clock import SimClock

UNKNOWN = "<unknown>"
DOWN, RING, RINGING, UP = 0, 4, 5, 6
STATE_DESC = {0: "Down", 1: "Rsrvd", 2: "OffHook", 3: "Dialing", 4: "Ring", 5: "Ringing", 6: "Up",
              7: "Busy", 8: "Dialing Offhook", 9: "Pre-ring", 10: "Unknown"}
CAUSE_TEXT = {0: "Unknown", 16: "Normal Clearing", 17: "User busy", 19: "No user responding",
              21: "Call Rejected", 26: "Answered elsewhere"}


@dataclass(eq=False)
class Channel:
    name: str
    uniqueid: str
    linkedid: str
    state: int
    context: str
    exten: str
    created: float
    priority: int = 1
    cid_num: str = ""
    cid_name: str = ""
    conn_num: str = ""
    conn_name: str = ""
    language: str = "en"
    accountcode: str = ""
    app: str = ""
    appdata: str = ""
    bridge_id: str = ""
    ani: str = ""                               # CEL CallerIDani (set on the outgoing half)
    dial_app: tuple[str, str] | None = None     # the app CEL shows for an outgoing Local ;1
    runs_pbx: bool = False                      # runs dialplan: CEL shows no app once hung up
    hangup_source: str = ""                     # CEL HANGUP Extra
    dial_status: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    owner: object | None = None  # the call script that drives it (for the Hangup action)
    gone: bool = False

    @property
    def tech(self) -> str:
        return self.name.split("/", 1)[0]

    def fields(self, prefix: str = "") -> list[tuple[str, str]]:
        return [
            (f"{prefix}Channel", self.name),
            (f"{prefix}ChannelState", str(self.state)),
            (f"{prefix}ChannelStateDesc", STATE_DESC.get(self.state, "Unknown")),
            (f"{prefix}CallerIDNum", self.cid_num or UNKNOWN),
            (f"{prefix}CallerIDName", self.cid_name or UNKNOWN),
            (f"{prefix}ConnectedLineNum", self.conn_num or UNKNOWN),
            (f"{prefix}ConnectedLineName", self.conn_name or UNKNOWN),
            (f"{prefix}Language", self.language),
            (f"{prefix}AccountCode", self.accountcode),
            (f"{prefix}Context", self.context),
            (f"{prefix}Exten", self.exten),
            (f"{prefix}Priority", str(self.priority)),
            (f"{prefix}Uniqueid", self.uniqueid),
            (f"{prefix}Linkedid", self.linkedid),
        ]


class ChannelRegistry:
    """Creates channels, keeps the live ones by name (for actions), forgets them at hang-up."""

    MAX_LIVE = 20_000  # bounded: a runaway script cannot grow this forever

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self._uid = 0
        self._local_seq = 0
        self._tech_seq: dict[str, int] = defaultdict(int)
        self.live: dict[str, Channel] = {}
        self.watchers: set = set()  # asyncio.Events set whenever a channel comes or goes (ChanSpy)
        self.processed = 0  # channels that ran dialplan (CoreStatus CoreProcessedCalls)

    def _uniqueid(self) -> str:
        uid = f"{int(self.clock.now())}.{self._uid}"
        self._uid += 1
        return uid

    def _add(self, chan: Channel) -> Channel:
        if len(self.live) >= self.MAX_LIVE:
            raise RuntimeError("too many live channels in the simulator")
        self.live[chan.name] = chan
        self._changed()
        return chan

    def _changed(self) -> None:
        for event in list(self.watchers):
            event.set()

    def local_pair(self, exten: str, context: str, linkedid: str | None = None) -> tuple[Channel, Channel]:
        base = f"Local/{exten}@{context}-{self._local_seq:08x}"
        self._local_seq += 1
        now = self.clock.now()
        uid1 = self._uniqueid()
        one = Channel(f"{base};1", uid1, linkedid or uid1, DOWN, context, exten, now)
        two = Channel(f"{base};2", self._uniqueid(), linkedid or uid1, RING, context, exten, now, runs_pbx=True)
        return self._add(one), self._add(two)

    def device(self, interface: str, linkedid: str | None, context: str, exten: str) -> Channel:
        tech = interface.split("/", 1)[0]
        name = f"{interface}-{self._tech_seq[tech]:08x}"
        self._tech_seq[tech] += 1
        uid = self._uniqueid()
        return self._add(Channel(name, uid, linkedid or uid, DOWN, context, exten, self.clock.now()))

    def local_in_use(self, device: str) -> bool:
        """A Local device is in use while a pair of that name has both halves up (local_devicestate:
        the ;1 owner and the ;2 caretaker running its dialplan)."""
        prefix = device + "-"
        return any(n.startswith(prefix) and n.endswith(";1") and n[:-1] + "2" in self.live for n in self.live)

    def linkedid_live(self, linkedid: str) -> bool:
        return any(c.linkedid == linkedid for c in self.live.values())

    def forget(self, chan: Channel) -> None:
        chan.gone = True
        self.live.pop(chan.name, None)
        self._changed()
