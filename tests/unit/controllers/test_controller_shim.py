"""OpenFlow conversion, the algorithm registry and the launcher's input checks (no switch)."""

from __future__ import annotations

import json
import socket
import struct
from types import SimpleNamespace

import pytest
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controllers.openflow import launcher
from controllers.algorithms.registry import ALGORITHMS, Algorithm, UnknownAlgorithm, make_algorithm
from controllers.algorithms.ecmp import EcmpAlgorithm
from controllers.core.intents import (Bucket, ClearSwitch, FlowRule, Group, Output, PacketOut,
                                      ToController, ToGroup)
from controllers.openflow.ofmsgs import (HASH_SLOTS, HASH_TABLE, hash_slots, switch_hash_basis,
                               to_ofmsgs)
from tests.unit.controllers.fakeofpipeline import OFPipeline
from tests.unit.controllers.fakeoftable import field_matches
from topologies import load
from topologies.export import save

DPID = 0x100000000


def fake_datapath(dpid: int = DPID) -> SimpleNamespace:
    return SimpleNamespace(id=dpid, ofproto=ofproto_v1_3, ofproto_parser=ofproto_v1_3_parser)


def serialize(messages):
    for xid, message in enumerate(messages, start=1):
        message.set_xid(xid)
        message.serialize()
        assert len(message.buf) >= 8
    return messages


#: OpenFlow 1.3 wire layouts (the spec's, not os-ken's): header, then the message body.
OFP_HEADER = struct.Struct("!BBHI")  # version, type, length, xid
FLOW_MOD = struct.Struct("!QQBBHHHIIIH2xHH")  # cookie .. flags, then match type and length
GROUP_MOD = struct.Struct("!HBxI")  # command, type, group id
OFPT_FLOW_MOD, OFPT_GROUP_MOD, OFPT_BARRIER_REQUEST = 14, 15, 20


def wire_fields(message) -> tuple:
    """(type, fields) of a serialized OpenFlow message, decoded from its bytes."""
    version, kind, length, _ = OFP_HEADER.unpack_from(message.buf)
    assert version == 4 and length == len(message.buf)
    if kind == OFPT_FLOW_MOD:
        (_, _, table, command, _, _, _, _, out_port, out_group, _, match_type,
         match_len) = FLOW_MOD.unpack_from(message.buf, OFP_HEADER.size)
        return kind, {"table": table, "command": command, "out_port": out_port,
                      "out_group": out_group, "match": (match_type, match_len)}
    if kind == OFPT_GROUP_MOD:
        command, _, group_id = GROUP_MOD.unpack_from(message.buf, OFP_HEADER.size)
        return kind, {"command": command, "group": group_id}
    return kind, {}


#: ClearSwitch on the wire: delete flows in all tables (0xff) of any out port / group with an
#: empty OXM match, then delete group 0xfffffffc (OFPG_ALL).
CLEAR_SWITCH = [
    (OFPT_FLOW_MOD, {"table": 0xFF, "command": 3, "out_port": 0xFFFFFFFF,
                     "out_group": 0xFFFFFFFF, "match": (1, 4)}),
    (OFPT_GROUP_MOD, {"command": 2, "group": 0xFFFFFFFC}),
]


def test_clear_switch_deletes_every_flow_of_every_table_and_every_group():
    messages = serialize(to_ofmsgs(fake_datapath(), [ClearSwitch(DPID), ClearSwitch(DPID + 1)]))
    assert [wire_fields(m) for m in messages] == CLEAR_SWITCH


def test_switch_program_serializes_in_order():
    topology = load("rail-2tier-small")
    tor = topology.node("t0r0")
    intents = EcmpAlgorithm(topology).switch_up(tor.dpid, 0.0)
    messages = serialize(to_ofmsgs(fake_datapath(tor.dpid), intents))
    kinds = [type(m).__name__ for m in messages]
    assert kinds[:2] == ["OFPFlowMod", "OFPGroupMod"]  # clear: all flows, all groups
    assert messages[0].command == ofproto_v1_3.OFPFC_DELETE
    assert messages[0].table_id == ofproto_v1_3.OFPTT_ALL
    assert messages[1].group_id == ofproto_v1_3.OFPG_ALL
    # Select groups become hash-table entries, written before the rules that use them.
    adds = [m for m in messages if type(m).__name__ == "OFPFlowMod"
            and m.command == ofproto_v1_3.OFPFC_ADD]
    last_slot = max(i for i, m in enumerate(adds) if m.table_id == HASH_TABLE)
    first_user = min(i for i, m in enumerate(adds) if any(
        type(ins).__name__ == "OFPInstructionGotoTable" for ins in m.instructions))
    assert last_slot < first_user


def test_flow_group_packet_out_fields():
    dp = fake_datapath()
    intents = [
        Group(DPID, 3, "select", (Bucket(5), Bucket(6, weight=2))),
        FlowRule(DPID, 224, {"eth_type": 0x0800, "ipv4_dst": ("10.1.2.0", "255.255.255.0")},
                 (ToGroup(3),)),
        FlowRule(DPID, 100, {"eth_type": 0x0806}, (ToController(),)),
        FlowRule(DPID, 0),
        FlowRule(DPID, 232, {"eth_type": 0x0800, "ipv4_dst": "10.1.0.1"}, (Output(1),),
                 command="delete"),
        PacketOut(DPID, 4, b"\x01" * 60),
        Group(DPID, 3, command="delete"),
        FlowRule(DPID + 1, 0),  # other switch: skipped
    ]
    messages = serialize(to_ofmsgs(dp, intents, salt=7))
    slots, rest = messages[:HASH_SLOTS], messages[HASH_SLOTS:]
    route, arp, miss, delete, out, group_del = rest
    assert all(m.table_id == HASH_TABLE and m.match["reg1"] == 3 for m in slots)
    assert [m.match["reg0"] for m in slots] == list(range(HASH_SLOTS))
    ports = [m.instructions[0].actions[0].port for m in slots]
    assert (ports.count(5), ports.count(6)) == (22, 42)  # weights 1:2
    assert route.match["ipv4_dst"] == ("10.1.2.0", "255.255.255.0")
    load_group, multipath = route.instructions[0].actions
    assert (load_group.dst, load_group.value) == ("reg1", 3)
    assert (multipath.fields, multipath.basis, multipath.max_link) == (
        3, switch_hash_basis(7, DPID), HASH_SLOTS - 1)
    assert route.instructions[1].table_id == HASH_TABLE
    assert arp.instructions[0].actions[0].port == ofproto_v1_3.OFPP_CONTROLLER
    assert miss.priority == 0 and miss.instructions == []
    assert delete.command == ofproto_v1_3.OFPFC_DELETE_STRICT
    assert out.in_port == ofproto_v1_3.OFPP_CONTROLLER and out.actions[0].port == 4
    assert group_del.table_id == HASH_TABLE and group_del.match["reg1"] == 3
    assert group_del.command == ofproto_v1_3.OFPFC_DELETE


def test_equal_buckets_take_one_masked_entry_per_residue_with_the_same_slot_mapping():
    dp = fake_datapath()
    for ports in ((5,), (5, 6), (1, 2, 3, 4), tuple(range(1, 9))):
        group = Group(DPID, 3, "select", tuple(Bucket(port) for port in ports))
        entries = serialize(to_ofmsgs(dp, [group]))
        assert len(entries) == len(ports)
        for slot, port in enumerate(hash_slots(group.buckets)):
            hits = [m for m in entries
                    if slot & m.match["reg0"][1] == m.match["reg0"][0] & m.match["reg0"][1]]
            assert [m.instructions[0].actions[0].port for m in hits] == [port]
        assert all(m.match["reg0"][1] & (1 << 31) for m in entries)  # no slot past 63
    # A bucket set whose copies do not divide the slots keeps one entry per slot.
    three = Group(DPID, 3, "select", (Bucket(1), Bucket(2), Bucket(3)))
    assert [m.match["reg0"] for m in serialize(to_ofmsgs(dp, [three]))] == list(range(HASH_SLOTS))


def test_a_modified_group_changes_layout_without_overlapping_entries():
    # 4 ports (4 masked entries) -> 3 (one entry per slot) -> 2 (2 masked): after each
    # modify every slot hits exactly one entry, on the port hash_slots gives it.
    dp, table = fake_datapath(), OFPipeline(field_matches)
    for command, ports in (("add", (1, 2, 3, 4)), ("modify", (1, 2, 3)), ("modify", (1, 2))):
        group = Group(DPID, 3, "select", tuple(Bucket(port) for port in ports), command)
        for message in to_ofmsgs(dp, [group]):
            table.apply(message)
        for slot, port in enumerate(hash_slots(group.buckets)):
            entry = table.lookup(HASH_TABLE, {"reg0": slot, "reg1": 3})  # raises on overlap
            assert entry.instructions[0].actions[0].port == port



def test_hash_slots_follow_weights_and_interleave():
    assert hash_slots((Bucket(5), Bucket(6), Bucket(7)), slots=6) == [5, 6, 7, 5, 6, 7]
    assert hash_slots((Bucket(1, 3), Bucket(2)), slots=8).count(1) == 6
    assert hash_slots(()) == []


def test_hash_basis_differs_per_switch_and_salt():
    bases = {switch_hash_basis(0, dpid) for dpid in (0x100000000, 0x100000001, 0x200000000,
                                                      0x300000000, 0x300000001)}
    assert len(bases) == 5
    assert switch_hash_basis(1, DPID) != switch_hash_basis(2, DPID)


def test_registry_knows_ecmp_and_rejects_unknown():
    topology = load("rail-2tier-small")
    assert isinstance(make_algorithm("ecmp", topology), Algorithm)
    assert make_algorithm("ecmp", topology).name == "ecmp" and "ecmp" in ALGORITHMS
    with pytest.raises(UnknownAlgorithm, match=r"unknown name 'nope' \(known: adaptive, dcqcn, ecmp, proactive, reactive, swift\)"):
        make_algorithm("nope", topology)
    with pytest.raises(UnknownAlgorithm, match="bad options"):
        make_algorithm("ecmp", topology, bogus=1)


def test_launcher_rejects_bad_topology_algo_and_busy_port(tmp_path, capsys):
    missing = tmp_path / "none.json"
    assert launcher.main(["--topology", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("railcc controller: --topology") and "\n" not in err
    garbage = tmp_path / "bad.json"
    garbage.write_text(json.dumps({"format": 99}))
    assert launcher.main(["--topology", str(garbage)]) == 2
    assert "format must be 1" in capsys.readouterr().err
    good = save(load("rail-2tier-small"), tmp_path / "topo.json")
    assert launcher.main(["--topology", str(good), "--algo", "nope"]) == 2
    assert "unknown name 'nope'" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert launcher.main(["--topology", str(good), "--port", str(port)]) == 2
    assert f"--port {port}" in capsys.readouterr().err


def test_launcher_defaults():
    args = launcher.parse_args(["--topology", "t.json"])
    assert (args.algo, args.port, args.stats_interval) == ("ecmp", 6653, 0.2)
    assert launcher.LISTEN_HOST == "127.0.0.1"


class RecordingDatapath(SimpleNamespace):
    """Stands in for an os-ken Datapath: records what the app sends."""

    def __init__(self, dpid: int) -> None:
        super().__init__(id=dpid, ofproto=ofproto_v1_3, ofproto_parser=ofproto_v1_3_parser,
                         xid=0, sent=[])

    def set_xid(self, msg):
        self.xid += 1
        msg.set_xid(self.xid)
        return self.xid

    def send_msg(self, msg):
        if msg.xid is None:
            self.set_xid(msg)
        msg.serialize()
        self.sent.append(msg)


def test_shim_programs_switch_marks_ready_after_barrier_and_answers_arp(tmp_path):
    from scapy.layers.l2 import ARP, Ether

    from controllers.openflow import shim
    topology = load("rail-2tier-small")
    ready = tmp_path / "ready.json"
    shim.configure(shim.ShimConfig(save(topology, tmp_path / "t.json"), "ecmp", ready))
    app = shim.RailccController()
    assert json.loads(ready.read_text()) == {"configured": [], "names": [], "expected": 12,
                                             "complete": False, "errors": 0}
    tor = topology.node("t0r0")
    dp = RecordingDatapath(tor.dpid)
    app.on_features(SimpleNamespace(msg=SimpleNamespace(datapath=dp)))
    (request,) = dp.sent  # first, what the switch already holds
    assert isinstance(request, ofproto_v1_3_parser.OFPFlowStatsRequest)
    app.on_flow_stats(flow_stats(dp, []))
    barrier = dp.sent[-1]
    assert all(wire_fields(m)[1]["command"] == 0 for m in dp.sent[1:-1])  # adds only
    assert wire_fields(barrier)[0] == OFPT_BARRIER_REQUEST
    assert OFPT_BARRIER_REQUEST not in [wire_fields(m)[0] for m in dp.sent[:-1]]
    assert json.loads(ready.read_text())["configured"] == []
    app.on_barrier(SimpleNamespace(msg=SimpleNamespace(datapath=dp, xid=barrier.xid + 7)))
    assert json.loads(ready.read_text())["configured"] == []
    app.on_barrier(SimpleNamespace(msg=SimpleNamespace(datapath=dp, xid=barrier.xid)))
    state = json.loads(ready.read_text())
    assert state["configured"] == [tor.dpid] and state["names"] == ["t0r0"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    asker, target = topology.nics[0], topology.nics[5]
    frame = bytes(Ether(src=asker.mac, dst="ff:ff:ff:ff:ff:ff") /
                  ARP(op=1, hwsrc=asker.mac, psrc=asker.ip, pdst=target.ip))
    before = len(dp.sent)
    app.on_packet_in(SimpleNamespace(msg=SimpleNamespace(
        datapath=dp, match={"in_port": asker.tor_port}, data=frame)))
    (out,) = dp.sent[before:]
    assert out.actions[0].port == asker.tor_port and Ether(out.data)[ARP].hwsrc == target.mac


def flow_stats(dp, flows, more: bool = False) -> SimpleNamespace:
    """A flow-stats reply event of ``dp`` listing ``flows`` (parsed OFPFlowStats)."""
    return SimpleNamespace(msg=SimpleNamespace(datapath=dp, body=list(flows),
                                               flags=ofproto_v1_3.OFPMPF_REPLY_MORE if more
                                               else 0))


#: ofp_flow_stats up to its match: length, table, duration, priority, timeouts, flags,
#: cookie, packet and byte counts (OpenFlow 1.3, 7.3.5.2).
FLOW_STATS = struct.Struct("!HBxIIHHHH4xQQQ")


def as_held(mod) -> ofproto_v1_3_parser.OFPFlowStats:
    """The flow entry a switch reports after taking ``mod``: its match and instructions
    moved, as wire bytes, into an ofp_flow_stats that os-ken parses back."""
    mod.serialize()
    body = bytes(mod.buf[OFP_HEADER.size + 40:])  # match, then instructions
    stats = FLOW_STATS.pack(FLOW_STATS.size + len(body), mod.table_id, 5, 0, mod.priority,
                            0, 0, 0, mod.cookie, 100, 6400) + body
    return ofproto_v1_3_parser.OFPFlowStats.parser(stats, 0)


def test_a_reconnecting_switch_is_resynced_without_a_flush(tmp_path):
    # A switch that kept forwarding while the controller was away: what it holds exactly
    # is left alone (nothing re-sent), a flow whose actions differ is re-added over the
    # one it holds (same table, priority, match), and only a flow the program no longer
    # has is deleted, before the program goes out.
    from controllers.openflow import shim
    topology = load("rail-2tier-small")
    shim.configure(shim.ShimConfig(save(topology, tmp_path / "t.json"), "ecmp",
                                   tmp_path / "ready.json"))
    app = shim.RailccController()
    dp = RecordingDatapath(topology.node("t0r0").dpid)
    app.on_features(SimpleNamespace(msg=SimpleNamespace(datapath=dp)))
    app.on_flow_stats(flow_stats(dp, []))
    program = [m for m in dp.sent if isinstance(m, ofproto_v1_3_parser.OFPFlowMod)]
    held = [as_held(m) for m in program]
    changed = next(i for i, m in enumerate(program) if m.table_id == HASH_TABLE)
    moved = program[changed].instructions[0].actions[0].port + 1
    held[changed] = as_held(ofproto_v1_3_parser.OFPFlowMod(
        dp, table_id=HASH_TABLE, priority=program[changed].priority,
        match=program[changed].match, instructions=[ofproto_v1_3_parser.OFPInstructionActions(
            ofproto_v1_3.OFPIT_APPLY_ACTIONS, [ofproto_v1_3_parser.OFPActionOutput(moved)])]))
    stale = as_held(ofproto_v1_3_parser.OFPFlowMod(
        dp, priority=999, match=ofproto_v1_3_parser.OFPMatch(eth_type=0x0800,
                                                             ipv4_dst="10.9.9.9")))
    dp.sent.clear()
    app.on_features(SimpleNamespace(msg=SimpleNamespace(datapath=dp)))
    app.on_flow_stats(flow_stats(dp, held[:5], more=True))
    assert len(dp.sent) == 1  # still waiting for the rest of the reply
    app.on_flow_stats(flow_stats(dp, held[5:] + [stale]))
    mods = [m for m in dp.sent if isinstance(m, ofproto_v1_3_parser.OFPFlowMod)]
    assert [(m.command, m.priority) for m in mods] == [
        (ofproto_v1_3.OFPFC_DELETE_STRICT, 999), (ofproto_v1_3.OFPFC_ADD, program[changed].priority)]
    assert mods[1].match.items() == program[changed].match.items()
    assert wire_fields(dp.sent[-1])[0] == OFPT_BARRIER_REQUEST
    assert not any(isinstance(m, ofproto_v1_3_parser.OFPGroupMod) for m in dp.sent)


def test_shim_handler_errors_are_logged_not_raised(tmp_path, caplog):
    from controllers.openflow import shim
    topology = load("rail-2tier-small")
    shim.configure(shim.ShimConfig(save(topology, tmp_path / "t.json")))
    app = shim.RailccController()
    app.on_packet_in(SimpleNamespace(msg=None))
    assert "handler on_packet_in failed" in caplog.text
    error = SimpleNamespace(type=ofproto_v1_3.OFPET_GROUP_MOD_FAILED,
                            code=ofproto_v1_3.OFPGMFC_UNKNOWN_GROUP, xid=9, data=b"\x04",
                            datapath=SimpleNamespace(id=topology.node("s0").dpid))
    app.on_error(SimpleNamespace(msg=error))
    assert "OFPErrorMsg from switch s0" in caplog.text and "OFPGMFC_UNKNOWN_GROUP" in caplog.text


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_standby_controller_boots_but_listens_only_once_released(tmp_path):
    # A controller-restart fault boots the replacement while the old one is dead; the
    # downtime it was given must hold: no OpenFlow listener before release.
    import time

    from fabric.net.controller_process import ControllerProcess

    topology = save(load("rail-2tier-small"), tmp_path / "topo.json")
    controller = ControllerProcess(topology, "ecmp", tmp_path)
    controller.boot_standby()
    try:
        deadline = time.monotonic() + 30
        controller.wait_standby(timeout=30)
        assert "standby, booted" in (tmp_path / "controller.log").read_text()
        time.sleep(0.3)
        assert not _accepts(controller.port)
        pid = controller.release()
        while not _accepts(controller.port):
            assert time.monotonic() < deadline and controller.proc.poll() is None
            time.sleep(0.05)
        assert pid == controller.proc.pid and controller.standby is None
    finally:
        controller.stop()
    assert controller.proc.returncode == 0


def test_a_link_changes_only_when_its_ends_do(tmp_path):
    # OVS reports each end of a cut link, and also sends MODIFY messages that repeat an
    # end's state: the far end of a link cut at the other still says "up". The algorithm
    # hears of the link going down once, and of it coming up when both ends are up.
    from controllers.openflow import shim
    topology = load("rail-2tier-small")
    shim.configure(shim.ShimConfig(save(topology, tmp_path / "t.json"), "ecmp",
                                   tmp_path / "ready.json"))
    app = shim.RailccController()
    heard = []
    app.algorithm.link_change = lambda link, up, now: heard.append((link, up)) or []
    link = next(l for l in topology.links if l.tier != "host")
    ends = {end.node: RecordingDatapath(topology.node(end.node).dpid) for end in link.ends()}

    def status(end, up):
        desc = SimpleNamespace(port_no=end.port, config=0 if up else ofproto_v1_3.OFPPC_PORT_DOWN,
                               state=0 if up else ofproto_v1_3.OFPPS_LINK_DOWN)
        app.on_port_status(SimpleNamespace(msg=SimpleNamespace(
            datapath=ends[end.node], reason=ofproto_v1_3.OFPPR_MODIFY, desc=desc)))

    status(link.a, False)
    status(link.b, True)  # the far end, repeating that it is up
    status(link.b, False)
    assert heard == [(link, False)]
    status(link.a, True)
    assert heard == [(link, False)]  # b is still down
    status(link.b, True)
    assert heard == [(link, False), (link, True)]


def test_port_stats_requests_are_spread_over_the_interval_one_switch_at_a_time():
    from controllers.openflow.shim import staggered

    # Sent together, a fabric's requests made one long turn of the datapath every round.
    plan = staggered([3, 1, 2, 4], 0.2)
    assert [dpid for _, dpid in plan] == [3, 1, 2, 4]
    assert [gap for gap, _ in plan] == pytest.approx([0.05] * 4)
    assert sum(gap for gap, _ in plan) == pytest.approx(0.2)
    assert staggered([], 0.2) == []
