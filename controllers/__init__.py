"""SDN controller: a pure core (routing, algorithms, intents) and a thin os-ken shim.

Only `controllers.openflow.shim`, `controllers.openflow.ofmsgs` and `controllers.openflow.launcher`
import os_ken; everything else is pure and unit-tests without a switch.
"""
