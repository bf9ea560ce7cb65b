"""AMI ingest: frames/s of the project's AMI protocol (sans-IO codec + typed events) vs panoramisk 1.4.

Both sides decode the SAME bytes: every tests/fixtures/asterisk-22/*.ami capture (a real Asterisk
22 stream: banner, responses, EventLists, events), banners removed, concatenated, repeated, with one
banner in front, cut into 4096-byte reads (what a socket read of an AMI stream gives).

- project: ``telephony.ami_protocol.HotlineAmiProtocol.data_received`` - the path the service
  runs per read: AmiDecoder (bytes -> Frame), ActionID matching, ``to_event`` (Frame -> typed
  event), then the factory's ``on_ami_event`` (here a counter).
- peer: ``panoramisk.ami_protocol.AMIProtocol.data_received`` - its own decode (str split,
  ``Message.from_line``), response matching, then the factory's ``dispatch`` (here a counter).
Each side gets a fake transport and a counting factory, nothing else. Before timing, one untimed
pass checks that both sides decoded every frame: same number of frames, same event names in the
same order. Timed passes alternate project/peer; rates are the median pass, the ratio the median of
the per-round ratios (each round runs the two back to back). Time is this process's CPU time (time.process_time), so
other processes on a shared machine do not count against either side; the wall-clock rate of the
project side is reported beside it.
"""

from __future__ import annotations

import gc
import statistics
import time

from panoramisk.ami_protocol import AMIProtocol

from bench.common import CAPTURES, emit, progress, r
from telephony.ami_codec import AmiDecoder
from telephony.ami_protocol import HotlineAmiProtocol

CHUNK = 4096
REPEAT = 12      # copies of the concatenated captures per pass
ROUNDS = 7       # timed passes per side
BANNER = b"Asterisk Call Manager/11.0.0\r\n"


class FakeTransport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def get_extra_info(self, name, default=None):
        return default


class ProjectSink:
    """Stands in for HotlineManager: receives the typed events."""

    def __init__(self, names: list | None = None) -> None:
        self.events = 0
        self.names = names

    def on_ami_event(self, event) -> None:
        self.events += 1
        if self.names is not None:
            self.names.append(event.name)

    def connection_lost(self, exc) -> None:
        pass


class PeerSink:
    """Stands in for panoramisk's Manager: receives the dispatched Messages."""

    forgetable_actions = ()
    save_stream = None

    def __init__(self, names: list | None = None) -> None:
        self.events = 0
        self.names = names
        self.awaiting_actions = []

    def dispatch(self, message) -> None:
        self.events += 1
        if self.names is not None:
            self.names.append(message["Event"])

    def connection_lost(self, exc) -> None:
        pass


class CountingPeer(AMIProtocol):
    """panoramisk's protocol counting every decoded message (verification pass only)."""

    frames = 0

    def handle_message(self, message):
        self.frames += 1
        return super().handle_message(message)


def capture_stream() -> tuple[bytes, int]:
    """One banner, then the bodies of all captures; also the number of frames in one body copy."""
    bodies = []
    for path in sorted(CAPTURES.glob("*.ami")):
        data = path.read_bytes()
        if data.startswith(b"Asterisk Call Manager/"):
            data = data[data.index(b"\r\n") + 2:]
        if not data.endswith(b"\r\n\r\n"):
            raise RuntimeError(f"{path.name} does not end on a frame boundary")
        bodies.append(data)
    body = b"".join(bodies)
    dec = AmiDecoder(expect_banner=False)
    dec.receive_data(body)
    return body, sum(1 for _ in dec)


def chunks(stream: bytes) -> list[bytes]:
    return [stream[i:i + CHUNK] for i in range(0, len(stream), CHUNK)]


def run_project(reads: list[bytes], names: list | None = None) -> tuple[float, int, int]:
    proto = HotlineAmiProtocol()
    proto.connection_made(FakeTransport())
    sink = ProjectSink(names)
    proto.factory = sink
    t0 = time.process_time()
    for data in reads:
        proto.data_received(data)
    dt = time.process_time() - t0
    return dt, getattr(proto, "frames_in", sink.events), sink.events


def run_peer(reads: list[bytes], names: list | None = None, counting: bool = False) -> tuple[float, int, int]:
    proto = CountingPeer() if counting else AMIProtocol()
    proto.connection_made(FakeTransport())
    sink = PeerSink(names)
    proto.factory = sink
    t0 = time.process_time()
    for data in reads:
        proto.data_received(data)
    dt = time.process_time() - t0
    return dt, getattr(proto, "frames", -1), sink.events


def run_codec_only(reads: list[bytes]) -> tuple[float, int]:
    dec = AmiDecoder()
    n = 0
    t0 = time.process_time()
    for data in reads:
        dec.receive_data(data)
        for _ in dec:
            n += 1
    return time.process_time() - t0, n


def main() -> None:
    body, frames_per_body = capture_stream()
    stream = BANNER + body * REPEAT
    reads = chunks(stream)
    expected = frames_per_body * REPEAT
    progress(f"ami_ingest: {len(stream)} bytes, {expected} frames, {len(reads)} reads of {CHUNK} bytes")

    # verification: both sides decode every frame, and the same events in the same order
    ours_names: list = []
    peer_names: list = []
    _, ours_frames, ours_events = run_project(reads, ours_names)
    _, peer_frames, peer_events = run_peer(reads, peer_names, counting=True)
    if ours_events != peer_events or peer_frames != expected or ours_frames not in (expected, ours_events):
        raise RuntimeError(f"frame counts differ: expected {expected}, project {ours_frames}, panoramisk {peer_frames}")
    if ours_names != peer_names:
        raise RuntimeError("the two decoders disagree on the event sequence")

    ours_rates, peer_rates, codec_rates, ratios, walls = [], [], [], [], []
    for i in range(ROUNDS):
        gc.collect()
        w0 = time.perf_counter()
        dt, n, _ = run_project(reads)
        walls.append(n / (time.perf_counter() - w0))
        ours_rates.append(n / dt)
        gc.collect()
        dt, _, _ = run_peer(reads)
        peer_rates.append(expected / dt)
        gc.collect()
        dt, n = run_codec_only(reads)
        codec_rates.append(n / dt)
        ratios.append(ours_rates[-1] / peer_rates[-1])
        progress(f"ami_ingest: round {i + 1}/{ROUNDS}: project {ours_rates[-1]:,.0f} frames/s, "
                 f"panoramisk {peer_rates[-1]:,.0f} frames/s")
    ours, peer = statistics.median(ours_rates), statistics.median(peer_rates)
    ratio = statistics.median(ratios)  # per round (adjacent passes): robust to a machine shared with others
    emit({
        "name": "ami_ingest",
        "value": round(ours),
        "unit": "frames/s (per CPU second)",
        "project_wall_frames_per_s": round(statistics.median(walls)),
        "peer": "panoramisk 1.4 AMIProtocol.data_received",
        "peer_value": round(peer),
        "ratio": r(ratio, 2),
        "ratio_min": r(min(ratios), 2),
        "ratio_max": r(max(ratios), 2),
        "target": "ratio >= 3",
        "met": ratio >= 3,
        "codec_only_frames_per_s": round(statistics.median(codec_rates)),
        "frames_per_pass": expected,
        "events_per_pass": ours_events,
        "frames_checked_equal": True,
        "bytes_per_pass": len(stream),
        "read_size": CHUNK,
        "rounds": ROUNDS,
        "ratio_is": "median over rounds of project/panoramisk, passes run back to back",
        "project_MB_per_s": r(len(stream) * ours / expected / 1e6, 1),
    })


if __name__ == "__main__":
    main()
