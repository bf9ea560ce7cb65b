"""A PBX simulator that speaks AMI and dials FastAGI like the Asterisk 22 of the captures."""

from telephony.simulator.caller import ScriptedCaller, SimCallResult, SimOriginateResult
from telephony.simulator.core import SeatBehaviour
from telephony.simulator.pbx import PbxSimulator, queue_definitions

__all__ = ["PbxSimulator", "ScriptedCaller", "SeatBehaviour", "SimCallResult", "SimOriginateResult", "queue_definitions"]
