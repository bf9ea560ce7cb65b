"""One Asterisk node's edge: lease, AMI link, call tracker, resync, journal, open-call store.

How this works: ``run`` holds the node's Redis lease (fail-open: Redis down never stops the
holder). On taking it the runner restores the calls in progress that the previous holder (or
this process before a SIGKILL) left in the open-call store, replays the journal entries not yet
written, and starts the AMI link. After every AMI login it resyncs: CoreStatus (an Asterisk
restart?), CoreShowChannels (adopt calls in progress, close calls that no longer exist), and
the seats' queue membership. Events go to the live views and the tracker; a finished call goes
to the journal (Redis Stream) first, then to the writer; the journal entry is deleted once the
call is committed. On losing the lease the AMI link stops and the tracker is emptied: the new
holder takes the calls over from Redis.

Every call is in Redis at all times until written: in the open-call store while in progress
(flushed every ``flush_interval`` s), in the journal once finished. With Redis down, finished
calls go straight to the writer (which keeps retrying Postgres) and open calls live in memory.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from config.settings import NodeSettings, Settings
from hotline.lease import NodeLease
from queues.live import LiveStats
from queues.seats import reconcile_seats
from telephony.actions import PbxActions
from telephony.ami_client import AmiClient
from telephony.events import AmiEvent
from telephony.model import FinishedCall
from telephony.resync import boot_id, live_channels
from telephony.tracker import CallTracker
from workorders.journal import CallJournal, JournalUnavailable, OpenCallStore
from workorders.pipeline import CallWriter

log = logging.getLogger("hotline.node")


class NodeRunner:
    def __init__(self, node: NodeSettings, settings: Settings, *, redis, writer: CallWriter, live: LiveStats,
                 owner: str, flush_interval: float = 0.2,
                 on_event: Callable[[AmiEvent], None] | None = None) -> None:
        self.node = node
        self.settings = settings
        self.writer = writer
        self.live = live
        self.tracker = CallTracker(node.id)
        self.journal = CallJournal(redis, node.id)
        self.open_store = OpenCallStore(redis, node.id)
        self.lease = NodeLease(redis, node.id, owner, ttl=settings.lease_ttl, fail_open=True)
        self.flush_interval = flush_interval
        self._on_event_extra = on_event
        self.ami: AmiClient | None = None
        self.actions: PbxActions | None = None
        self.boot: str | None = None
        self.restarts_seen = 0
        self.resyncs = 0
        self._consuming: list[asyncio.Task] = []
        self._journal_q: asyncio.Queue[FinishedCall] = asyncio.Queue()
        self._unjournaled_removals: set[str] = set()   # open-store entries to drop once written
        self._removed: set[str] = set()                 # open-store entries to drop at the next flush
        self.active = asyncio.Event()

    # -- lease ------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.lease.hold(self._acquired, self._lost)

    async def _acquired(self) -> None:
        await self._recover()
        s = self.node.ami
        self.ami = AmiClient(
            host=s.host, port=s.port, username=s.username,
            secret=s.secret.get_secret_value() if s.secret else "",
            on_event=self.on_event, on_connected=self._on_connected,
            action_timeout=s.action_timeout, connect_timeout=s.connect_timeout, name=self.node.id,
        )
        self.actions = PbxActions(self.ami)
        self._consuming = [asyncio.create_task(coro) for coro in
                           (self.ami.run(), self._journaler(), self._flusher())]
        self.active.set()

    async def _lost(self) -> None:
        await self._stop_consuming()
        # The new holder takes the open calls over from Redis; ours would be stale.
        self.tracker = CallTracker(self.node.id)
        self.boot = None

    async def _stop_consuming(self) -> None:
        self.active.clear()
        if self.ami is not None:
            await self.ami.close()
        for task in self._consuming:
            task.cancel()
        await asyncio.gather(*self._consuming, return_exceptions=True)
        self._consuming = []

    async def stop(self) -> None:
        """Graceful: stop consuming, journal what is finished, save what is open, give the lease up."""
        await self._stop_consuming()
        while not self._journal_q.empty():
            await self._journal_one(self._journal_q.get_nowait())
        await self._flush()
        if self.lease.held:
            try:
                await self.lease.release()
            except Exception as exc:  # noqa: BLE001 - Redis down: the lease expires by itself
                log.warning("node %s: lease not released (%s); it expires in %g s", self.node.id, exc, self.lease.ttl)

    # -- recovery and resync ------------------------------------------------------------------

    async def _recover(self) -> None:
        """Take over what an earlier holder left: open calls, then unwritten finished calls."""
        try:
            snapshot = await self.open_store.load()
            pending = await self.journal.pending()
        except JournalUnavailable as exc:
            log.warning("node %s: Redis unavailable, nothing to recover from it (%s)", self.node.id, exc)
            return
        restored = self.tracker.restore(snapshot, skip={call.linkedid for _, call in pending})
        for entry_id, call in pending:
            self.writer.submit(call, self._acker(entry_id))
        if restored or pending:
            log.info("node %s: recovered %d calls in progress and %d finished calls not yet written",
                     self.node.id, restored, len(pending))

    async def _on_connected(self, client: AmiClient) -> None:
        status = await self.actions.core_status()
        boot = boot_id(status.frame)
        restarted = self.boot is not None and boot != self.boot
        if restarted:
            self.restarts_seen += 1
            log.warning("node %s: Asterisk restarted (was up since %s, now since %s)", self.node.id, self.boot, boot)
        self.boot = boot
        mark = self.tracker.mark()
        listing = await self.actions.core_show_channels()
        closed, adopted = self.tracker.resync(live_channels(listing.items), mark,
                                              reason="asterisk_restart" if restarted else "resync")
        self.resyncs += 1
        for call in closed:
            self._finished(call)
        log.info("node %s: resync: %d live channels, %d calls adopted, %d calls closed, %d open",
                 self.node.id, len(listing.items), adopted, len(closed), len(self.tracker))
        await reconcile_seats(self.actions, self.settings.seats, [q.name for q in self.settings.queues])

    # -- events -----------------------------------------------------------------------------------

    def on_event(self, event: AmiEvent) -> None:
        self.live.push_event(event)
        call = self.tracker.feed(event)
        if call is not None:
            self._finished(call)
        if self._on_event_extra is not None:
            self._on_event_extra(event)

    def _finished(self, call: FinishedCall) -> None:
        self._journal_q.put_nowait(call)

    async def _journaler(self) -> None:
        while True:
            call = await self._journal_q.get()
            await self._journal_one(call)

    async def _journal_one(self, call: FinishedCall) -> None:
        try:
            entry_id = await self.journal.append(call)
        except JournalUnavailable as exc:
            log.warning("node %s: call %s not journaled (%s); written directly", self.node.id, call.linkedid, exc)
            self._unjournaled_removals.add(call.linkedid)
            self.writer.submit(call, self._forget_open(call.linkedid))
            return
        self._removed.add(call.linkedid)   # durable in the journal: the open entry may go
        self.writer.submit(call, self._acker(entry_id))

    def _acker(self, entry_id: str):
        async def ack() -> None:
            try:
                await self.journal.ack(entry_id)
            except JournalUnavailable as exc:  # replayed later; the writer is idempotent
                log.warning("node %s: journal entry %s not acknowledged (%s)", self.node.id, entry_id, exc)
        return ack

    def _forget_open(self, linkedid: str):
        async def forget() -> None:
            self._unjournaled_removals.discard(linkedid)
            self._removed.add(linkedid)
        return forget

    # -- open-call store -----------------------------------------------------------------------

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self._flush()

    async def _flush(self) -> None:
        dirty = self.tracker.take_dirty()
        removed = set(self._removed)
        if not dirty and not removed:
            return
        changed = {lid: self.tracker.export(lid) for lid in dirty if lid in self.tracker.calls}
        try:
            await self.open_store.save(changed, removed)
        except JournalUnavailable:
            self.tracker.mark_dirty(dirty)   # try again at the next flush
            return
        self._removed -= removed
