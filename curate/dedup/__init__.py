"""Deduplication jobs, all one Job shape (map -> group by key -> reduce -> [finalize] -> decisions):
`exact_dedup` (hashes), `minhash_dedup` (text, MinHash LSH), `phash_dedup` (perceptual image hashes),
`semantic_dedup` (embeddings, SemDeDup). Near-dup jobs share curate/dedup/graph.py: edges -> connected
components -> one representative per cluster, computed in the driver over the edges only."""
