"""paths.json on a real fabric: the path each flow took, read from OVS's datapath flows,
is where the fabric's own queues saw the bytes go; the fluid estimate is made from it."""

import csv
import json
import tomllib
from collections import defaultdict

import pytest

from experiments.analysis.fluid import data_paths
from tests.emulation.test_run import SPECS, run_spec

pytestmark = pytest.mark.emulation
#: A direction of a fabric link carried a data flow when its queue sent more than this
#: (one ring step of the spec's 1 MB is 31 kB; ACKs add about 1 % of what they answer).
CARRIED_BYTES = 20_000


def test_recorded_paths_are_the_ones_the_bytes_took(tmp_path):
    # The shipped ECMP AllReduce (scattered: every ring hop but the pod-local ones crosses
    # a spine the hash chose).
    summary = run_spec(tomllib.loads((SPECS / "allreduce.toml").read_text()), tmp_path)
    recorded = json.loads((tmp_path / "paths.json").read_text())
    assert recorded["errors"] == [] and recorded["flows"], recorded["errors"]
    topology = json.loads((tmp_path / "topology.json").read_text())
    server_of = {nic["ip"]: nic["server"] for nic in topology["nics"]}

    # Each flow is a walk from its source server to its destination server.
    for flow in recorded["flows"]:
        assert flow["complete"], flow
        assert flow["nodes"][0] == server_of[flow["src_ip"]], flow
        assert flow["nodes"][-1] == server_of[flow["dst_ip"]], flow
        for link, a, b in zip(flow["links"], flow["nodes"], flow["nodes"][1:]):
            assert set(link.split("#")[0].split("-")) == {a, b}, flow

    # Every transfer of every round has its data flow.
    paths = data_paths(recorded["flows"])
    transfers = json.loads((tmp_path / "transfers.json").read_text())
    rounds = {key: n for n, key in enumerate(sorted({(t["phase"], t["iteration"])
                                                    for t in transfers}), 1)}
    missing = [t["id"] for t in transfers
               if (rounds[(t["phase"], t["iteration"])], t["src_ip"], t["dst_ip"]) not in paths]
    assert missing == []

    # The fabric's queues agree: a switch-to-switch direction sent data iff a recorded data
    # flow crossed it that way.
    crossed = {(a, b) for flow in recorded["flows"]
               if flow["bytes"] > 1000 * flow["packets"]
               for a, b in zip(flow["nodes"][1:-1], flow["nodes"][2:-1])}
    sent = defaultdict(list)
    with (tmp_path / "ports.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["tier"] != "host":
                sent[(row["node"], row["peer"])].append(int(row["sent_bytes"]))
    carried = {pair for pair, values in sent.items() if max(values) - min(values) > CARRIED_BYTES}
    assert carried == crossed, (sorted(carried - crossed), sorted(crossed - carried))
    assert summary["fluid"]["efficiency"] is not None, summary["fluid"]
