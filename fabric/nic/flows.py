"""Announce mode of the emulated NIC: flows are agreed with the fabric manager before sending.

With ``configure.announce`` a QP that gets work while the manager does not
know it sends a FLOW_REQUEST (its address, the peer, the bytes queued, its UDP
source port) to ``wire.MANAGER_IP`` and holds its packets until a RATE_GRANT
arrives; the grant's rate becomes the QP's rate. A request unanswered for
``grant_timeout_ms`` is sent again; after ``MAX_TRIES`` the QP sends at its
current rate anyway (counted in ``grant_timeouts``). A QP idle for
``linger_ms`` after its last ACK reports FLOW_DONE, so back-to-back messages
(the steps of a ring) stay one flow. Later grants (rate changes) apply at once.
"""

from __future__ import annotations

import logging

from fabric.nic import wire
from fabric.nic.control import AgentConfig
from fabric.nic.port import NicPort, earliest
from fabric.nic.qp import SendQP

log = logging.getLogger(__name__)

MAX_TRIES = 3


class FlowAnnouncer:
    """Requests, grants and completions of one agent's QPs (see the module docstring)."""

    def __init__(self, config: AgentConfig, count: dict[str, int]) -> None:
        self.linger_ns = int(config.linger_ms * 1e6)
        self.timeout_ns = int(config.grant_timeout_ms * 1e6)
        self.count = count

    def on_queued(self, qp: SendQP, nic: NicPort, now: int) -> int | None:
        """Work was added to ``qp``: ask for a grant unless its flow is known; a deadline."""
        qp.done_deadline = None
        if qp.announced:
            return None
        qp.announced, qp.held, qp.request_tries = True, True, 0
        return self._request(qp, nic, now)

    def _request(self, qp: SendQP, nic: NicPort, now: int) -> int:
        qp.request_seq = (qp.request_seq + 1) % wire.PSN_MOD
        qp.request_tries += 1
        request = wire.FlowRequest(qp.qp, qp.nic_ip, qp.remote_ip, qp.unacked_bytes(),
                                   qp.src_port, qp.request_seq)
        nic.send_ack(qp.src_port, wire.MANAGER_IP, wire.encode(request), "control_sent")
        qp.request_deadline = now + self.timeout_ns
        return qp.request_deadline

    def on_grant(self, qp: SendQP, grant: wire.RateGrant, now: int) -> None:
        """A grant: pace at its rate and release the QP's packets."""
        self.count["grants_received"] += 1
        if grant.rate_kbps > 0:
            qp.set_rate(grant.rate_kbps / 1000.0, now)
        qp.held, qp.request_deadline = False, None

    def on_idle(self, qp: SendQP, now: int) -> int | None:
        """Every packet of ``qp`` is acknowledged: report the flow done after the linger."""
        if not qp.announced:
            return None
        qp.done_deadline = now + self.linger_ns
        return qp.done_deadline

    def on_timer(self, qp: SendQP, nic: NicPort, now: int) -> int | None:
        """Retry unanswered requests, report lingered-out flows; the QP's next deadline."""
        if qp.held and qp.request_deadline is not None and now >= qp.request_deadline:
            if qp.request_tries >= MAX_TRIES:
                qp.held, qp.request_deadline = False, None
                self.count["grant_timeouts"] += 1
                log.warning("qp %d to %s: no grant after %d requests; sending anyway", qp.qp,
                            qp.remote_ip, MAX_TRIES)
            else:
                self._request(qp, nic, now)
        if qp.done_deadline is not None and now >= qp.done_deadline:
            qp.done_deadline = None
            if qp.idle() and not qp.held:
                done = wire.FlowDone(qp.qp, qp.nic_ip, qp.remote_ip, 0, qp.request_seq)
                nic.send_ack(qp.src_port, wire.MANAGER_IP, wire.encode(done), "control_sent")
                qp.announced = False
        return earliest(qp.request_deadline if qp.held else None, qp.done_deadline)
