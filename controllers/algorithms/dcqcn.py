"""`dcqcn` (DCQCN, Zhu et al. 2015): congestion control at the NICs, on ECMP's paths.

The controller installs ECMP's hashed routes and nothing else: flows are
neither announced nor pinned. The receivers mark packets by their queueing
delay and send CNPs, the senders run DCQCN's rate machine
(`fabric.nic.dcqcn`; parameters in the spec's ``[dcqcn]`` table). ``reactive``
is its alias (before DCQCN at the NICs it was a controller polling port
counters and sending CNPs, which a 10-frame buffer outran).
"""

from __future__ import annotations

from controllers.algorithms.ecmp import EcmpAlgorithm


class DcqcnAlgorithm(EcmpAlgorithm):
    """ECMP's routes; the congestion control runs in the NICs."""

    name = "dcqcn"
