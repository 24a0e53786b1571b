"""Near-duplicate graphs: candidate edges -> connected components -> one representative per cluster.

Shared by the near-dup jobs (`minhash_dedup`, `phash_dedup`, `semantic_dedup`). Their `reduce` emits edges
between records that matched (`EDGE_SCHEMA`: two node keys). A node key is a string that sorts in
representative order: records from earlier batches of the run (part = -1) first, then the smallest `rank`
(jobs map their policy to a float: 0 for "first uid", -len(text) for "longest", -score for "score"), then
the smallest uid; it ends with the uid and part (`node_key`, `uid_of`, `part_of`). So a cluster's
representative is simply the smallest key of its component, whatever algorithm finds the component.

Two ways to find components, with identical results (tests/dedup/test_graph.py):
- `component_labels`: in one process (min-label propagation with pointer jumping over the edge list;
  the runner uses it for small runs, tests and `run_job_local`). Memory: the edges.
- large-star / small-star rounds (Kiveris et al., "Connected Components in MapReduce and Beyond", 2014):
  `star_map` + `large_star` / `small_star` reduce over groups of node keys, one shuffle each, O(log^2 n)
  rounds. The runner runs them as Ray Data group-bys, so no process holds more than a bucket of edges;
  `star_labels` runs the same functions in a plain loop (the reference for tests).
Both give `LABEL_SCHEMA` rows (node, root); `cluster_decisions` maps them to the job's decisions row by row.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import schema
from curate.stage import Job

EDGE_SCHEMA = pa.schema([("a", pa.string()), ("b", pa.string())])
LABEL_SCHEMA = pa.schema([("node", pa.string()), ("root", pa.string())])
# rows of a star round: (src, dst) edges; one stat row per reduce call has src = null and `bad` = the
# number of its nodes that are not yet a star centre or leaf (0 everywhere: converged)
STAR_SCHEMA = pa.schema([("src", pa.string()), ("dst", pa.string()), ("bad", pa.int64())])
_SEP = "\x1f"


def _rank_hex(rank: float) -> str:
    """16 hex digits that sort like the float (NaN sorts last, -0.0 like 0.0)."""
    r = np.float64(np.inf if np.isnan(rank) else rank + 0.0)
    bits = int(r.view(np.uint64))
    bits = (~bits & 0xFFFFFFFFFFFFFFFF) if bits >> 63 else bits | (1 << 63)
    return f"{bits:016x}"


def node_key(uid: str, part: int, rank: float) -> str:
    return f"{0 if part == -1 else 1}{_rank_hex(rank)}{uid}{_SEP}{part}"


def uid_of(key: str) -> str:
    return key[17:key.rindex(_SEP)]


def part_of(key: str) -> int:
    return int(key[key.rindex(_SEP) + 1:])


def edges_table(uids: list, parts: list, ranks: list, pairs: list[tuple[int, int]]) -> pa.Table:
    """Edge rows for index pairs (i, j) into the member lists of one group."""
    if not pairs:
        return EDGE_SCHEMA.empty_table()
    used = sorted({k for p in pairs for k in p})
    keys = {k: node_key(uids[k], parts[k], ranks[k]) for k in used}
    return pa.table({"a": [keys[i] for i, _ in pairs], "b": [keys[j] for _, j in pairs]}, schema=EDGE_SCHEMA)


def edge_uids(edges: pa.Table) -> list[tuple[str, str]]:
    """(uid, uid) of each edge."""
    return [(uid_of(a), uid_of(b)) for a, b in zip(edges.column("a").to_pylist(), edges.column("b").to_pylist())]


# -- in one process --------------------------------------------------------------------------------------

def connected_components(src: np.ndarray, dst: np.ndarray, n: int) -> np.ndarray:
    """Min-label propagation with pointer jumping over an edge list: label[i] = smallest node id in i's component."""
    labels = np.arange(n, dtype=np.int64)
    if len(src) == 0:
        return labels
    while True:
        m = np.minimum(labels[src], labels[dst])
        new = labels.copy()
        np.minimum.at(new, src, m)
        np.minimum.at(new, dst, m)
        while True:  # pointer jumping: follow labels to their roots
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, labels):
            return labels
        labels = new


def component_labels(edges: pa.Table) -> pa.Table:
    """(node, root) for every node of an edge; root = the smallest node key of its component."""
    if edges.num_rows == 0:
        return LABEL_SCHEMA.empty_table()
    a, b = edges.column("a").combine_chunks(), edges.column("b").combine_chunks()
    nodes = pc.unique(pa.concat_arrays([a, b]))
    nodes = nodes.take(pc.sort_indices(nodes))  # index order = key order, so the min label is the min key
    ia = pc.index_in(a, value_set=nodes).to_numpy()
    ib = pc.index_in(b, value_set=nodes).to_numpy()
    labels = connected_components(ia, ib, len(nodes))
    return pa.table({"node": nodes, "root": nodes.take(pa.array(labels))}, schema=LABEL_SCHEMA)


# -- as map/reduce rounds --------------------------------------------------------------------------------

def star_map(table: pa.Table, kind: str) -> pa.Table:
    """Map side of a round, over edges (EDGE_SCHEMA) or a previous round's output (STAR_SCHEMA): (src, dst)
    rows to group by src. Large star: both directions; small star: from the larger endpoint to the smaller."""
    if "src" in table.column_names:
        table = table.filter(pc.and_(pc.is_valid(table.column("src")),
                                     pc.not_equal(table.column("src"), table.column("dst"))))
        x, y = table.column("src"), table.column("dst")
    else:
        table = table.filter(pc.not_equal(table.column("a"), table.column("b")))
        x, y = table.column("a"), table.column("b")
    if kind == "large":
        src, dst = pa.chunked_array(x.chunks + y.chunks, pa.string()), pa.chunked_array(y.chunks + x.chunks, pa.string())
    else:
        src, dst = pc.max_element_wise(x, y), pc.min_element_wise(x, y)
    return pa.table({"src": src, "dst": dst})


def _star_reduce(group: pa.Table, kind: str) -> pa.Table:
    t = group.select(["src", "dst"]).group_by(["src", "dst"], use_threads=False).aggregate([])
    agg = t.group_by("src", use_threads=False).aggregate([("dst", "min"), ("dst", "count")])
    src = agg.column("src")
    m = pc.min_element_wise(src, agg.column("dst_min"))
    if kind == "large":
        # a node is settled when all its neighbours are larger (a centre) or it has one, smaller one (a leaf)
        bad = pc.sum(pc.and_(pc.less(agg.column("dst_min"), src), pc.greater(agg.column("dst_count"), 1))).as_py() or 0
    else:
        bad = 0
    per = pa.table({"src": src, "m": m})
    j = t.join(per, "src", use_threads=False)
    if kind == "large":
        # link every larger neighbour to the smallest node of the neighbourhood; centres keep a self row
        out = j.filter(pc.greater(j.column("dst"), j.column("src")))
        rows_src = [out.column("dst"), per.filter(pc.equal(per.column("m"), per.column("src"))).column("src")]
        rows_dst = [out.column("m"), per.filter(pc.equal(per.column("m"), per.column("src"))).column("m")]
    else:
        # link the node and its smaller neighbours to the smallest of them
        rows_src = [j.column("dst"), per.column("src")]
        rows_dst = [j.column("m"), per.column("m")]
    src_out = pa.chunked_array([c for a in rows_src for c in a.chunks], pa.string())
    dst_out = pa.chunked_array([c for a in rows_dst for c in a.chunks], pa.string())
    edges = pa.table({"src": src_out, "dst": dst_out})
    if kind == "small":
        edges = edges.filter(pc.not_equal(src_out, dst_out))
    edges = edges.append_column("bad", pa.array(np.zeros(edges.num_rows, np.int64)))
    stat = pa.table({"src": pa.nulls(1, pa.string()), "dst": pa.nulls(1, pa.string()), "bad": [bad]},
                    schema=STAR_SCHEMA)
    return pa.concat_tables([edges.cast(STAR_SCHEMA), stat])


def large_star(group: pa.Table) -> pa.Table:
    """Reduce side of a large-star round over any set of whole src groups (STAR_SCHEMA rows out)."""
    return _star_reduce(group, "large")


def small_star(group: pa.Table) -> pa.Table:
    """Reduce side of a small-star round over any set of whole src groups (STAR_SCHEMA rows out)."""
    return _star_reduce(group, "small")


def star_labels(out: pa.Table) -> pa.Table:
    """Labels from the output of a converged large-star round: a centre's self row and one row per leaf."""
    out = out.filter(pc.is_valid(out.column("src")))
    return pa.table({"node": out.column("src"), "root": out.column("dst")}, schema=LABEL_SCHEMA)


def star_bad(out: pa.Table) -> int:
    return int(pc.sum(out.column("bad")).as_py() or 0)


MAX_ROUNDS = 200


def star_rounds(edges: pa.Table, groups: int = 3) -> tuple[pa.Table, int]:
    """The distributed algorithm in a plain loop, with src groups split over `groups` reduce calls:
    (labels, rounds). The reference the runner's Ray rounds are tested against."""
    import zlib

    def grouped(t: pa.Table, reduce) -> pa.Table:
        b = np.array([zlib.crc32(s.encode()) % groups for s in t.column("src").to_pylist()], np.int64)
        return pa.concat_tables([reduce(t.filter(pa.array(b == g))) for g in range(groups)])

    if edges.num_rows == 0:
        return LABEL_SCHEMA.empty_table(), 0
    t: pa.Table = edges
    for rounds in range(1, MAX_ROUNDS + 1):
        out = grouped(star_map(t, "large"), large_star)
        if star_bad(out) == 0:
            return star_labels(out), rounds
        t = grouped(star_map(out, "small"), small_star)
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


# -- decisions ---------------------------------------------------------------------------------------------

def cluster_decisions(labels: pa.Table, decision_schema: pa.Schema, *, reason: str, cluster_col: str) -> pa.Table:
    """Decisions for labelled nodes of this batch (row by row: any slice of the labels works): the
    representative (the root) stays ok, the others are dropped with `reason` and `dup_of` = the
    representative; all get `cluster_col` = the representative's uid. Earlier batches' samples are never changed."""
    nodes, roots = labels.column("node").to_pylist(), labels.column("root").to_pylist()
    parts = [part_of(k) for k in nodes]
    keep = [p != -1 for p in parts]
    nodes = [k for k, ok in zip(nodes, keep) if ok]
    roots = [r for r, ok in zip(roots, keep) if ok]
    n = len(nodes)
    rep = pa.array([k == r for k, r in zip(nodes, roots)], pa.bool_())
    cluster = pa.array([uid_of(r) for r in roots], pa.string())
    cols = {
        "uid": pa.array([uid_of(k) for k in nodes], pa.string()),
        "part": pa.array([p for p, ok in zip(parts, keep) if ok], pa.int32()),
        "status": pc.if_else(rep, schema.OK, schema.DROPPED),
        "reason": pc.if_else(rep, pa.scalar(None, pa.string()), reason),
        "dup_of": pc.if_else(rep, pa.scalar(None, pa.string()), cluster),
        cluster_col: cluster,
    }
    out = {f.name: cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in decision_schema}
    return pa.table(out).cast(decision_schema)


class ClusterJob(Job):
    """Base of the near-duplicate jobs: reduce emits candidate edges, connected components make clusters.

    `graph = True` tells the runner that `reduce` returns edges: small runs call `finalize` (components
    in the driver); large ones run the star rounds on Ray and call `decide` on the labels, part by part.
    Every active row ends with a cluster id (its own uid when it has no near duplicate), so
    `curate clusters` and the report see singletons as such.
    """

    graph: ClassVar[bool] = True
    cluster_col: ClassVar[str] = ""
    cluster_reason: ClassVar[str] = ""

    def reduce_schema(self) -> pa.Schema:
        return EDGE_SCHEMA

    def decide(self, labels: pa.Table) -> pa.Table:
        return cluster_decisions(labels, self.decision_schema(), reason=self.cluster_reason,
                                 cluster_col=self.cluster_col)

    def finalize(self, reduced: pa.Table) -> pa.Table:
        return self.decide(component_labels(reduced))

    def complete(self, table: pa.Table) -> pa.Table:
        active = schema.active_mask(table)
        return schema.set_rows(table, pc.and_(active, pc.is_null(table.column(self.cluster_col))),
                               {self.cluster_col: table.column("uid")})
