"""`reduce`: selection to a budget that keeps the dataset representative (TL;DR-style data reduction).

allocate.py splits the budget over clusters (exact, largest remainder); vectors.py reads embedding columns
into unit vectors without a Python loop; job.py is the Job (k-means fit -> per-cluster ranking -> budget).
"""
