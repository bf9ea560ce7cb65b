"""One Asterisk node's edge: lease, AMI link, call tracker, resync, journal, open-call store.

How this works: every instance follows the node's AMI stream from the start (login, resync of
its tracker from CoreShowChannels, events into the tracker), but only the holder of the node's
Redis lease *owns* it: journals and writes finished calls, keeps the open-call store, updates the
live views and changes Asterisk (queue membership). A follower keeps the calls it saw finish in
a shadow list for ``shadow_seconds``. Taking the lease over (the owner died or was cut off), the
runner restores the open calls the previous owner saved in Redis, replays the journal entries
not yet written and hands its shadow list to the writer; the writer is idempotent on
(node, linkedid), so a call the old owner already wrote is not written twice, and a call that
started and ended while no owner was alive is still written, because the follower saw it. Then
it resyncs as owner (seats too). The lease is fail-open: Redis down never stops an owner.

After every AMI login the runner resyncs: CoreStatus (an Asterisk restart?), CoreShowChannels
(adopt calls in progress, close calls that no longer exist, ``closed_by``), and, as owner, the
seats' queue membership, then (if the node has an operator desk) the logged-in operators'
memberships and pauses (``queues.operators.OperatorDesk.reconcile``), then (first node) the live
leader slots' leader seats in their leader queues (``queues.leader.LeaderDesk.sync_leader_seats``;
both reconciles keep those memberships); the desk gets the owner's
AMI events (so does the callback desk, queues/callbacks.py, for its Originates' channels).
A finished call goes to the journal (Redis Stream) first, then to the
writer; the journal entry is deleted once the call is committed. Every call is in Redis until
written: in the open-call store while in progress (flushed every ``flush_interval`` s), in the
journal once finished. With Redis down, finished calls go straight to the writer (which keeps
retrying Postgres) and open calls live in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
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
                 owner: str, flush_interval: float = 0.2, shadow_seconds: float | None = None,
                 on_event: Callable[[AmiEvent], None] | None = None) -> None:
        self.node = node
        self.settings = settings
        self.writer = writer
        self.live = live
        self.tracker = CallTracker(node.id)
        self.tracker.track_dirty = False   # following until the lease is ours
        self.journal = CallJournal(redis, node.id)
        self.open_store = OpenCallStore(redis, node.id)
        self.lease = NodeLease(redis, node.id, owner, ttl=settings.lease_ttl, fail_open=True)
        self.flush_interval = flush_interval
        # A follower remembers finished calls long enough to cover a takeover (lease ttl and the
        # time to notice), with a wide margin.
        self.shadow_seconds = shadow_seconds if shadow_seconds is not None else max(120.0, 6 * settings.lease_ttl)
        self._on_event_extra = on_event
        s = node.ami
        self.ami = AmiClient(
            host=s.host, port=s.port, username=s.username,
            secret=s.secret.get_secret_value() if s.secret else "",
            on_event=self.on_event, on_connected=self._on_connected,
            action_timeout=s.action_timeout, connect_timeout=s.connect_timeout, name=node.id,
        )
        self.actions = PbxActions(self.ami)
        self.boot: str | None = None
        self.restarts_seen = 0
        self.resyncs = 0
        self.recovered = False
        self._resync_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._owner_tasks: list[asyncio.Task] = []
        self._journal_q: asyncio.Queue[FinishedCall] = asyncio.Queue()
        self._removed: set[str] = set()                 # open-store entries to drop at the next flush
        self._shadow: deque[tuple[float, FinishedCall]] = deque()   # finished while following
        self.active = asyncio.Event()                   # set while this instance owns the node
        # the operator desk of this node (queues.operators.OperatorDesk), set by the service; None: none
        self.desk = None
        # the leader hotline (queues.leader.LeaderDesk) whose callbacks' OriginateResponse it awaits
        self.leader = None
        # the missed-call callback desk (queues.callbacks.CallbackDesk) that follows its Originates
        self.callbacks = None
        self._side_tasks: set[asyncio.Task] = set()

    # -- lease: follow always, own while the lease is ours ---------------------------------------

    async def run(self) -> None:
        self._tasks = [asyncio.create_task(self.ami.run()), asyncio.create_task(self._journaler())]
        await self.lease.hold(self._acquired, self._lost)

    @property
    def owning(self) -> bool:
        return self.active.is_set()

    async def _acquired(self) -> None:
        # Returns at once (the lease loop waits for it): recovery runs in the owner task.
        self.active.set()
        self.tracker.track_dirty = True
        self.tracker.mark_dirty(self.tracker.calls)   # save every open call at the first flush
        self.recovered = False
        self._owner_tasks = [asyncio.create_task(self._owner())]

    async def _lost(self) -> None:
        """Another instance owns the node now: keep following, stop writing and changing Asterisk."""
        self.active.clear()
        self.tracker.track_dirty = False
        self.tracker.take_dirty()
        for task in self._owner_tasks:
            task.cancel()
        await asyncio.gather(*self._owner_tasks, return_exceptions=True)
        self._owner_tasks = []

    async def _owner(self) -> None:
        """Recover what an earlier owner left (retried while Redis is down), resync, then keep
        the open-call store up to date."""
        next_try = 0.0
        while True:
            if not self.recovered and time.monotonic() >= next_try:
                self.recovered = await self._recover()
                next_try = time.monotonic() + 2.0
                if self.recovered:   # restored calls that ended meanwhile are closed by a resync after it
                    self._owner_tasks.append(asyncio.create_task(self._resync_when_ready()))
            await self._flush()
            await asyncio.sleep(self.flush_interval)

    async def _resync_when_ready(self) -> None:
        await self.ami.ready.wait()   # a login's own resync may be running: the lock puts this one after
        await self._owner_resync()

    async def _owner_resync(self) -> None:
        try:
            await self._resync()
        except Exception as exc:  # noqa: BLE001 - the next login resyncs again
            log.warning("node %s: resync as owner failed (%s); reconnecting", self.node.id, exc)
            if self.ami.protocol is not None:
                self.ami.protocol.close()

    async def stop(self) -> None:
        """Graceful: stop the AMI link, journal what finished, save what is open, give the lease up."""
        owning = self.owning
        await self.ami.close()                 # no more events; finished calls still go to the journal
        if owning:
            try:
                await asyncio.wait_for(self._journal_q.join(), 10)
            except asyncio.TimeoutError:
                log.warning("node %s: %d finished calls not journaled at stop", self.node.id, self._journal_q.qsize())
        await self._lost()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if not owning:
            return
        self.tracker.track_dirty = True
        self.tracker.mark_dirty(self.tracker.calls)
        await self._flush()
        try:
            await self.lease.release()
        except Exception as exc:  # noqa: BLE001 - Redis down: the lease expires by itself
            log.warning("node %s: lease not released (%s); it expires in %g s", self.node.id, exc, self.lease.ttl)

    # -- recovery and resync ------------------------------------------------------------------

    async def _recover(self) -> bool:
        """Take over what an earlier owner left: open calls, unwritten finished calls, and the
        calls this instance saw finish while following. False if Redis cannot be read yet."""
        try:
            snapshot = await self.open_store.load()
            pending = await self.journal.pending()
            if self.boot is None:
                self.boot = await self.open_store.get_boot()
        except JournalUnavailable as exc:
            log.warning("node %s: cannot recover from Redis yet (%s); retrying", self.node.id, exc)
            return False
        except Exception:  # noqa: BLE001 - never stop the owner task; try again
            log.exception("node %s: recovery failed; retrying", self.node.id)
            return False
        journaled = {call.linkedid for _, call in pending}
        restored, obsolete = self.tracker.restore(snapshot, skip=journaled)
        self._removed |= obsolete
        for entry_id, call in pending:
            self.writer.submit(call, self._acker(entry_id))
        shadow = [call for call in self._take_shadow() if call.linkedid not in journaled]
        for call in shadow:
            self._journal_q.put_nowait(call)
        if restored or pending or shadow:
            log.info("node %s: recovered %d calls in progress, %d finished calls not yet written and %d calls "
                     "seen finishing while following", self.node.id, restored, len(pending), len(shadow))
        return True

    async def _on_connected(self, client: AmiClient) -> None:
        await self._resync()

    async def _resync(self) -> None:
        async with self._resync_lock:
            status = await self.actions.core_status()
            boot = boot_id(status.frame)
            restarted = self.boot is not None and boot != self.boot
            if restarted:
                self.restarts_seen += 1
                log.warning("node %s: Asterisk restarted (was up since %s, now since %s)", self.node.id, self.boot, boot)
            self.boot = boot
            mark = self.tracker.mark()
            listing = await self.actions.core_show_channels()
            # A barrier: events Asterisk queued before answering (a Hangup racing the list) are
            # applied before any call is closed.
            await self.ami.send_action("Ping")
            closed, adopted = self.tracker.resync(live_channels(listing.items), mark,
                                                  reason="asterisk_restart" if restarted else "resync")
            self.resyncs += 1
            for call in closed:
                self._finished(call)
            log.info("node %s: resync%s: %d live channels, %d calls adopted, %d calls closed, %d open",
                     self.node.id, "" if self.owning else " (following)", len(listing.items), adopted,
                     len(closed), len(self.tracker))
            if self.owning:
                try:
                    await self.open_store.set_boot(boot)
                except JournalUnavailable:
                    pass   # only needed to notice a restart across a service restart
                desk, keep = self.desk, None
                if desk is not None:
                    try:
                        await desk.refresh()   # the operators' seats, so the static seats' reconcile keeps them
                        keep = desk.manages
                    except Exception as exc:  # noqa: BLE001 - Postgres down must not cut the AMI link
                        log.warning("node %s: operators not reloaded (%s); no member removed this time",
                                    self.node.id, exc)
                        desk, keep = None, (lambda _interface: True)
                leader = self.leader
                if leader is not None:
                    try:
                        await leader.refresh_seats()   # live slots' leader seats: kept by both reconciles
                        keep = _either(keep, leader.keeps) if keep is not None else leader.keeps
                    except Exception as exc:  # noqa: BLE001 - Postgres down must not cut the AMI link
                        log.warning("node %s: leader slots not read (%s); no member removed this time",
                                    self.node.id, exc)
                        leader, keep = None, (lambda _interface: True)
                await reconcile_seats(self.actions, self.settings.seats, [q.name for q in self.settings.queues],
                                      keep=keep)
                if desk is not None:
                    try:
                        await desk.reconcile(restarted=restarted, reload=False)
                    except Exception as exc:  # noqa: BLE001 - the next login reconciles again
                        log.warning("node %s: operators not reconciled (%s)", self.node.id, exc)
                if leader is not None:
                    try:
                        await leader.sync_leader_seats(reload=False)   # back after an Asterisk restart
                    except Exception as exc:  # noqa: BLE001 - its periodic run repairs it
                        log.warning("node %s: leader seats not synced (%s)", self.node.id, exc)

    # -- events -----------------------------------------------------------------------------------

    def on_event(self, event: AmiEvent) -> None:
        if self.owning:
            self.live.push_event(event)
            if self.desk is not None:
                self.desk.on_event(event)
            if self.leader is not None and self.leader.expects(event):
                task = asyncio.create_task(self._leader_event(event))   # a Postgres write: off the event path
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)
            if self.callbacks is not None:
                self.callbacks.on_event(event)   # filters itself; non-blocking, in event order
        call = self.tracker.feed(event)
        if call is not None:
            self._finished(call)
        if self._on_event_extra is not None:
            self._on_event_extra(event)

    async def _leader_event(self, event: AmiEvent) -> None:
        try:
            await self.leader.on_event(event)
        except Exception:  # noqa: BLE001 - a callback's outcome not recorded must not hurt the calls
            log.exception("node %s: leader callback outcome not recorded", self.node.id)

    def _finished(self, call: FinishedCall) -> None:
        if self.owning:
            self._journal_q.put_nowait(call)
            return
        now = time.monotonic()
        self._shadow.append((now, call))
        while self._shadow and self._shadow[0][0] < now - self.shadow_seconds:
            self._shadow.popleft()

    def _take_shadow(self) -> list[FinishedCall]:
        calls = [call for _, call in self._shadow]
        self._shadow.clear()
        return calls

    async def _journaler(self) -> None:
        while True:
            call = await self._journal_q.get()
            try:
                await self._journal_one(call)
            finally:
                self._journal_q.task_done()

    async def _journal_one(self, call: FinishedCall) -> None:
        try:
            entry_id = await self.journal.append(call)
        except JournalUnavailable as exc:
            log.warning("node %s: call %s not journaled (%s); written directly", self.node.id, call.linkedid, exc)
            self.writer.submit(call, self._forget_open(call.linkedid))
            return
        except Exception:  # noqa: BLE001 - never stop journaling; the call still goes to Postgres
            log.exception("node %s: call %s could not be journaled; written directly", self.node.id, call.linkedid)
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
            self._removed.add(linkedid)
        return forget

    # -- open-call store -----------------------------------------------------------------------

    async def _flush(self) -> None:
        self._removed |= self.tracker.take_closed_quietly()
        dirty = self.tracker.take_dirty()
        removed = set(self._removed)
        if not dirty and not removed:
            return
        saved = False
        try:
            changed = {lid: self.tracker.export(lid) for lid in dirty if lid in self.tracker.calls}
            await self.open_store.save(changed, removed)
            saved = True
        except JournalUnavailable:
            pass
        except Exception:  # noqa: BLE001 - never stop saving open calls
            log.exception("node %s: open calls not saved", self.node.id)
        finally:
            if saved:
                self._removed -= removed
            else:
                self.tracker.mark_dirty(dirty)   # again at the next flush


def _either(first: Callable[[str], bool], second: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda interface: first(interface) or second(interface)
