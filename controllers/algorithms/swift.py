"""`swift` (Swift, Kumar et al. 2020): delay-based congestion control at the NICs, on ECMP's paths.

The controller installs ECMP's hashed routes and nothing else, as for `dcqcn`:
flows are neither announced nor pinned. Receivers echo each full frame's one-way
delay in their ACKs and senders keep the delay near a target per hop
(`fabric.nic.swift`; parameters in the spec's ``[swift]`` table).
"""

from __future__ import annotations

from controllers.algorithms.ecmp import EcmpAlgorithm


class SwiftAlgorithm(EcmpAlgorithm):
    """ECMP's routes; the congestion control runs in the NICs."""

    name = "swift"
