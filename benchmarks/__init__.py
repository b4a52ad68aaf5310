"""Benchmarks of sharedzarr against its peers, side by side in one run.

Run ``make bench`` (or ``python -m benchmarks.run``); see :mod:`benchmarks.run` for the options.

Modules
-------
config
    Sizes (``full``, ``quick``, ``tiny``) and the datasets.
peers
    One adapter per peer: a creator side (allocate, write, clean up) and a reader side
    (attach by handle, read, write chunks) that runs in a spawned worker for cross-process peers.
writers
    The peers of the writer-lock hand-off (j) and of append (k).
loader
    The peers of the data loader (l), among them a producer process feeding a Queue.
workloads
    The timed loops. The same functions run in the parent (in-process peers) and in the workers
    (cross-process peers), so every peer is timed by the same code.
worker
    The spawned worker processes and the parent-side client that drives them.
report
    Machine description, the Markdown table, the target checks and the plot.
run
    The command line entry point (``python -m benchmarks.run``).
profile_sz
    pyinstrument profiles of sharedzarr's hot paths, exercised as the benchmark does
    (``python -m benchmarks.profile_sz``).
"""
