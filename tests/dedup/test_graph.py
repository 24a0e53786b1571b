"""Connected components: the distributed large-star/small-star rounds give exactly the in-process labels."""
from __future__ import annotations

import random

import pyarrow as pa
import pytest

from curate.dedup.graph import (EDGE_SCHEMA, component_labels, edge_uids, node_key, part_of, star_rounds, uid_of)


def _edges(pairs, key=lambda i: node_key(f"u{i:05d}", i % 3, 0.0)):
    return pa.table({"a": [key(i) for i, _ in pairs], "b": [key(j) for _, j in pairs]}, schema=EDGE_SCHEMA)


def _as_dict(labels):
    return dict(zip(labels.column("node").to_pylist(), labels.column("root").to_pylist()))


def _graphs():
    rng = random.Random(7)
    chain = [(i, i + 1) for i in range(300)]
    rev_chain = [(i + 1, i) for i in range(300)]
    star = [(0, i) for i in range(1, 200)] + [(500 + i, 400) for i in range(100)]
    shuffled_chain = list(range(400))
    rng.shuffle(shuffled_chain)  # a path whose node order is random: the hard case for label propagation
    path = list(zip(shuffled_chain, shuffled_chain[1:]))
    rand = [(rng.randrange(2000), rng.randrange(2000)) for _ in range(1500)]
    cliques = [(b + i, b + j) for b in range(0, 300, 10) for i in range(10) for j in range(i + 1, 10)]
    return {"chain": chain, "rev_chain": rev_chain, "star": star, "path": path, "random": rand,
            "cliques": cliques, "pairs": [(2 * i, 2 * i + 1) for i in range(100)], "dup_edges": chain[:5] * 3}


@pytest.mark.parametrize("name", list(_graphs()))
def test_star_rounds_equal_in_process_components(name):
    edges = _edges(_graphs()[name])
    ref = _as_dict(component_labels(edges))
    for groups in (1, 4):
        labels, rounds = star_rounds(edges, groups)
        assert labels.num_rows == len(ref)  # every node exactly once
        assert _as_dict(labels) == ref
        assert rounds <= 30, rounds
    # the root is the smallest key of the component
    comp = {}
    for node, root in ref.items():
        comp.setdefault(root, []).append(node)
    assert all(min(v) == r for r, v in comp.items())


def test_pairs_converge_in_one_round():
    assert star_rounds(_edges([(2 * i, 2 * i + 1) for i in range(50)]))[1] == 1
    assert star_rounds(EDGE_SCHEMA.empty_table())[1] == 0


def test_node_keys_sort_in_representative_order():
    keys = [node_key("b", 3, 0.0), node_key("a", 3, 0.0), node_key("z", -1, 5.0), node_key("c", 0, -2.5),
            node_key("d", 1, float("nan")), node_key("e", 1, float("inf")), node_key("f", 1, -0.0)]
    order = [uid_of(k) for k in sorted(keys)]
    assert order == ["z", "c", "a", "b", "f", "d", "e"] or order == ["z", "c", "a", "b", "f", "e", "d"]
    assert order[:5] == ["z", "c", "a", "b", "f"]
    assert [part_of(k) for k in keys[:3]] == [3, 3, -1]
    weird = node_key("uid\x1fwith sep", 12, 1.0)
    assert uid_of(weird) == "uid\x1fwith sep" and part_of(weird) == 12
    e = _edges([(1, 2)])
    assert edge_uids(e) == [("u00001", "u00002")]
