"""Announce mode of the emulated NIC: flows are agreed with the fabric manager before sending.

With ``configure.announce`` a QP announces its flow once per lifetime, when
work is loaded for it (before the round starts, so the manager sees a job's
whole plan at once and grants before the first packet): a FLOW_REQUEST (its
address, the peer, the bytes loaded, its UDP source port) to
``wire.MANAGER_IP``; it holds its packets until a RATE_GRANT arrives and the
grant's rate becomes the QP's rate. A request unanswered for
``grant_timeout_ms`` is sent again, for as long as the QP has nothing to send
yet, each retry then waiting twice as long as the one before (up to
``MAX_BACKOFF`` timeouts: a manager busy placing a few hundred flows is not
asked again by all of them every timeout, and nothing waits on an idle QP);
once it has work, every timeout, and after ``MAX_TRIES`` unanswered it sends
at its current rate anyway (counted in ``grant_timeouts``): a slow or dead
manager delays a round's start, never a started flow by more than one timeout.
When every packet is acknowledged and no loaded work is left (a ring's later
steps still waiting for their data count as loaded), the QP reports FLOW_DONE
after ``linger_ms`` (default 0: at once), so the steps of a ring are one flow
and a finished flow's share is free at once. Later grants (rate changes, one
RATE_GRANT or several in a RATE_GRANTS) apply at once.
"""

from __future__ import annotations

import logging
import struct
import zlib

from fabric.nic import wire
from fabric.nic.control import AgentConfig
from fabric.nic.port import NicPort, earliest
from fabric.nic.qp import SendQP

log = logging.getLogger(__name__)

MAX_TRIES = 3
#: The longest wait between retries of an idle QP, in grant timeouts.
MAX_BACKOFF = 8


class FlowAnnouncer:
    """Requests, grants and completions of one agent's QPs (see the module docstring)."""

    def __init__(self, config: AgentConfig, count: dict[str, int]) -> None:
        self.linger_ns = int(config.linger_ms * 1e6)
        self.timeout_ns = int(config.grant_timeout_ms * 1e6)
        self.salt = config.salt
        self.count = count

    def on_loaded(self, qp: SendQP, nic: NicPort, now: int) -> int | None:
        """Work was loaded for ``qp``: ask for a grant unless its flow is known; a deadline."""
        qp.done_deadline = None
        if qp.announced:
            return None
        qp.announced, qp.held, qp.request_tries = True, True, 0
        return self._request(qp, nic, now)

    def on_queued(self, qp: SendQP, nic: NicPort, now: int) -> int | None:
        """Loaded work was queued on ``qp`` (announced when loaded); a deadline."""
        return self.on_loaded(qp, nic, now)

    def _request(self, qp: SendQP, nic: NicPort, now: int) -> int:
        qp.request_seq = (qp.request_seq + 1) % wire.PSN_MOD
        qp.request_tries += 1
        request = wire.FlowRequest(qp.qp, qp.nic_ip, qp.remote_ip,
                                   qp.unacked_bytes() + qp.unqueued_bytes, qp.src_port,
                                   qp.request_seq)
        nic.send_ack(qp.src_port, wire.MANAGER_IP, wire.encode(request), "control_sent")
        backoff = min(1 << (qp.request_tries - 1), MAX_BACKOFF) if qp.idle() else 1
        qp.request_deadline = now + self.timeout_ns * backoff
        return qp.request_deadline

    def on_grant(self, qp: SendQP, grant: wire.RateGrant, now: int) -> None:
        """A grant: pace at its rate and release the QP's packets."""
        self.count["grants_received"] += 1
        if grant.rate_kbps > 0:
            qp.set_rate(grant.rate_kbps / 1000.0, now)
        if qp.held and qp.idle():
            qp.phase_pending = True  # the round has not started: phase at its first work
        elif qp.held:
            self.on_first_work(qp, now)
        qp.held, qp.request_deadline = False, None

    def on_first_work(self, qp: SendQP, now: int) -> None:
        """A granted QP got its first work: it starts paced, at a seeded phase of its frame
        time, not with a full bucket. Every QP of a round is granted before the round
        starts, so full buckets would send a burst from every NIC at the same instant
        (2 frames per QP at line rate): an incast no real fabric's independent start
        times produce, and it overflows 10-frame buffers where the rates fit. The phase
        counts from the idle NIC's first possible frame, a line-rate frame time after the
        work came (core.NIC_IDLE_FRAMES), so that the NIC's wait does not line every QP
        up again behind it."""
        qp.phase_pending = False
        digest = zlib.crc32(struct.pack("!QI", self.salt & (2**64 - 1), qp.qp))
        nic_wait = qp.frame_bytes * qp.rate.current_mbps / qp.rate.line_mbps
        qp.set_credit(digest / 2**32 * qp.frame_bytes - nic_wait, now)

    def on_idle(self, qp: SendQP, now: int) -> int | None:
        """Every packet of ``qp`` is acknowledged: with no loaded work left, report the flow
        done after the linger."""
        if not qp.announced or qp.unqueued_shares:
            return None
        qp.done_deadline = now + self.linger_ns
        return qp.done_deadline

    def on_timer(self, qp: SendQP, nic: NicPort, now: int) -> int | None:
        """Retry unanswered requests, report lingered-out flows; the QP's next deadline."""
        if qp.held and qp.request_deadline is not None and now >= qp.request_deadline:
            if qp.request_tries >= MAX_TRIES and not qp.idle():
                qp.held, qp.request_deadline = False, None
                self.count["grant_timeouts"] += 1
                log.warning("qp %d to %s: no grant after %d requests; sending anyway", qp.qp,
                            qp.remote_ip, MAX_TRIES)
            else:
                self._request(qp, nic, now)
        if qp.done_deadline is not None and now >= qp.done_deadline:
            qp.done_deadline = None
            if qp.idle() and not qp.held and not qp.unqueued_shares:
                done = wire.FlowDone(qp.qp, qp.nic_ip, qp.remote_ip, 0, qp.request_seq)
                nic.send_ack(qp.src_port, wire.MANAGER_IP, wire.encode(done), "control_sent")
                qp.announced = False
        return earliest(qp.request_deadline if qp.held else None, qp.done_deadline)
