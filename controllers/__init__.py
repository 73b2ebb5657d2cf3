"""SDN controller: a pure core (routing, algorithms, intents) and a thin os-ken shim.

Only `controllers.shim`, `controllers.ofmsgs` and `controllers.launcher`
import os_ken; everything else is pure and unit-tests without a switch.
"""
