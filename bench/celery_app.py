"""The Celery 5 + Redis baseline: the stack fogmesh's predecessor ran on each node."""

import os

from celery import Celery

app = Celery("fogmesh_bench", broker=os.environ.get("FOGMESH_BENCH_REDIS", "redis://127.0.0.1:6379/0"),
             backend=os.environ.get("FOGMESH_BENCH_REDIS", "redis://127.0.0.1:6379/0"))
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                worker_prefetch_multiplier=64, broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False)


@app.task(name="echo")
def echo(payload):
    return payload
