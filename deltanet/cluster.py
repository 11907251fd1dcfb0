"""Where ``sweep`` and ``compress`` run their work: one Dask client, set up in one place.

``scheduler`` given: a client of the running ``dask.distributed`` scheduler at that address (its
workers must import ``deltanet`` and, for work that reads files, see the same paths). Otherwise a
``LocalCluster`` of ``workers`` processes with one thread each and no dashboard, closed with the
client. Workers inherit the environment (``deltanet --quiet`` silences their progress bars).
"""

from __future__ import annotations

import contextlib

__all__ = ["dask_client"]


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int = 2):
    """A ``dask.distributed.Client`` for the block (see the module doc); closed afterwards."""
    from dask.distributed import Client, LocalCluster

    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
