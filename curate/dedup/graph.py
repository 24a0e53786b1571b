"""Near-duplicate graphs: candidate edges -> connected components -> one representative per cluster.

Shared by the near-dup jobs (`minhash_dedup`, `phash_dedup`). Their `reduce` emits edges between
records that matched (columns of `EDGE_SCHEMA`: both endpoints with their part and rank); their
`finalize` calls `cluster_decisions`, which runs in the driver over the edges only. Memory is
O(number of edge rows + distinct uids that appear in an edge), i.e. bounded by the duplicates in the
corpus, not by the corpus: a sample without a near duplicate never reaches the driver.

Representative: records from earlier batches of the run (part = -1) first, then the smallest `rank`
(jobs map their policy to a float: 0 for "first uid", -len(text) for "longest", -score for "score"),
then the smallest uid. It is deterministic, so every execution path gives identical clusters.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import schema
from curate.stage import Job

EDGE_SCHEMA = pa.schema([
    ("a", pa.string()), ("a_part", pa.int32()), ("a_rank", pa.float64()),
    ("b", pa.string()), ("b_part", pa.int32()), ("b_rank", pa.float64()),
])


def edges_table(uids: list, parts: list, ranks: list, pairs: list[tuple[int, int]]) -> pa.Table:
    """Edge rows for index pairs (i, j) into the member lists of one group."""
    if not pairs:
        return EDGE_SCHEMA.empty_table()
    i = [p[0] for p in pairs]
    j = [p[1] for p in pairs]
    return pa.table({
        "a": [uids[k] for k in i], "a_part": pa.array([parts[k] for k in i], pa.int32()),
        "a_rank": pa.array([ranks[k] for k in i], pa.float64()),
        "b": [uids[k] for k in j], "b_part": pa.array([parts[k] for k in j], pa.int32()),
        "b_rank": pa.array([ranks[k] for k in j], pa.float64()),
    }, schema=EDGE_SCHEMA)


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


def clusters(edges: pa.Table) -> pa.Table:
    """Every uid that appears in an edge with its cluster (the representative's uid), part, and whether it represents."""
    if edges.num_rows == 0:
        return pa.table({"uid": pa.array([], pa.string()), "part": pa.array([], pa.int32()),
                         "cluster": pa.array([], pa.string()), "rep": pa.array([], pa.bool_())})
    ends = pa.concat_arrays([edges.column("a").combine_chunks(), edges.column("b").combine_chunks()])
    parts = np.concatenate([edges.column("a_part").to_numpy(), edges.column("b_part").to_numpy()])
    ranks = np.concatenate([edges.column("a_rank").to_numpy(), edges.column("b_rank").to_numpy()])
    nodes = pc.unique(ends)
    idx = pc.index_in(ends, value_set=nodes).to_numpy()
    n = len(nodes)
    e = edges.num_rows
    labels = connected_components(idx[:e], idx[e:], n)
    node_part = np.zeros(n, np.int32)
    node_rank = np.zeros(n, np.float64)
    node_part[idx] = parts
    node_rank[idx] = np.nan_to_num(ranks, nan=np.inf)
    # a uid's uid-order position, for the final tie-break
    uid_order = pc.rank(nodes, sort_keys="ascending", tiebreaker="first").to_numpy()
    order = np.lexsort((uid_order, node_rank, node_part != -1, labels))
    first = np.ones(n, bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    rep_of_label = np.empty(n, np.int64)
    rep_of_label[labels[order][first]] = order[first]
    rep = rep_of_label[labels]
    return pa.table({"uid": nodes, "part": pa.array(node_part, pa.int32()),
                     "cluster": nodes.take(pa.array(rep)), "rep": pa.array(rep == np.arange(n))})


def cluster_decisions(edges: pa.Table, decision_schema: pa.Schema, *, reason: str, cluster_col: str) -> pa.Table:
    """Decisions for every clustered row of this batch: the representative stays ok, the others are dropped
    with `reason` and `dup_of` = the representative; all get `cluster_col` = the representative's uid."""
    c = clusters(edges)
    c = c.filter(pc.not_equal(c.column("part"), -1))  # earlier batches' samples are never changed
    n = c.num_rows
    rep = c.column("rep")
    cols = {
        "uid": c.column("uid"), "part": c.column("part"),
        "status": pc.if_else(rep, schema.OK, schema.DROPPED),
        "reason": pc.if_else(rep, pa.scalar(None, pa.string()), reason),
        "dup_of": pc.if_else(rep, pa.scalar(None, pa.string()), c.column("cluster")),
        cluster_col: c.column("cluster"),
    }
    out = {}
    for f in decision_schema:
        out[f.name] = cols[f.name] if f.name in cols else pa.nulls(n, f.type)
    return pa.table(out).cast(decision_schema)


class ClusterJob(Job):
    """Base of the near-duplicate jobs: reduce emits candidate edges, the driver turns them into clusters.

    Subclasses name the cluster column and the drop reason; every active row ends with a cluster id (its
    own uid when it has no near duplicate), so `curate clusters` and the report see singletons as such.
    """

    cluster_col: ClassVar[str] = ""
    cluster_reason: ClassVar[str] = ""

    def finalize(self, reduced: pa.Table) -> pa.Table:
        return cluster_decisions(reduced, self.decision_schema(), reason=self.cluster_reason,
                                 cluster_col=self.cluster_col)

    def complete(self, table: pa.Table) -> pa.Table:
        active = schema.active_mask(table)
        return schema.set_rows(table, pc.and_(active, pc.is_null(table.column(self.cluster_col))),
                               {self.cluster_col: table.column("uid")})
