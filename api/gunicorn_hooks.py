"""gunicorn hooks for ``ganforge api`` (``-c python:ganforge.api.gunicorn_hooks``).

With several API processes the Prometheus values live in files, one set per process
(PROMETHEUS_MULTIPROC_DIR); a process that exits must say so, or its live gauges would be
reported forever (prometheus-client's multi-process mode).
"""


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
