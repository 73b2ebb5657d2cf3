"""A picture of a fabric: tiers as rows (servers, ToRs, leaves, spines), rails as colours."""

from __future__ import annotations

from pathlib import Path

from topologies.model import LEAF, SERVER, SPINE, TOR, Topology

_ROWS = {SERVER: 0, TOR: 1, LEAF: 2, SPINE: 3}


def positions(topology: Topology) -> dict[str, tuple[float, float]]:
    """x, y of every node: one row per tier, each row spread over [0, 1]."""
    rows: dict[int, list[str]] = {}
    for node in topology.nodes:
        row = _ROWS[node.kind]
        if node.kind == SPINE and topology.spec.tiers == 2:
            row = 2
        rows.setdefault(row, []).append(node.name)
    places = {}
    for row, members in rows.items():
        for i, name in enumerate(members):
            places[name] = ((i + 0.5) / len(members), float(row))
    return places


def draw(topology: Topology, path: Path) -> Path:
    """Write a PNG of the fabric to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    places = positions(topology)
    cmap = plt.get_cmap("tab10")
    width = min(40.0, max(8.0, len(topology.servers()) * 0.5))
    fig, ax = plt.subplots(figsize=(width, 6))
    for link in topology.links:
        (x1, y1), (x2, y2) = places[link.a.node], places[link.b.node]
        rail = topology.node(link.b.node).rail if link.tier == "host" else None
        colour = cmap(rail % 10) if rail is not None else "0.6"
        ax.plot([x1, x2], [y1, y2], color=colour, linewidth=0.8, alpha=0.8, zorder=1)
    for node in topology.nodes:
        x, y = places[node.name]
        marker = "s" if node.is_switch else "o"
        colour = cmap(node.rail % 10) if node.kind == TOR else ("0.2" if node.is_switch else "white")
        ax.scatter([x], [y], s=120, marker=marker, color=colour, edgecolors="black", zorder=2)
        if len(topology.nodes) <= 120:
            ax.annotate(node.name, (x, y), textcoords="offset points", xytext=(0, 9),
                        ha="center", fontsize=7)
    spec = topology.spec
    ax.set_title(f"{spec.name}: {len(topology.servers())} servers x {spec.rails} rails, "
                 f"{spec.tiers}-tier, {spec.nic_mbps:g} Mb/s links (colour = rail)")
    ax.set_yticks(sorted({y for _, y in places.values()}))
    ax.set_yticklabels(["servers", "ToRs", "leaves" if spec.tiers == 3 else "spines",
                        "spines"][:len(ax.get_yticks())])
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
