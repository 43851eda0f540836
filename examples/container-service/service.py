"""A fogmesh service container kind, standard library only.

fogmesh mounts a directory at /run/fogmesh and names a Unix socket in it in
$FOGMESH_SOCKET. Each connection carries one task: a line of JSON (the
task's args) in, a line of JSON out: {"result": ...}, or
{"error": "...", "code": "bad_args"} for args it refuses. Many connections
may come at once (the agent's workers share this one container).
"""

import json
import os
import socketserver


def handle(args):
    """The kind itself: here, statistics of args.values."""
    values = args.get("values")
    if not isinstance(values, list) or not values:
        raise ValueError("args.values must be a non-empty list of numbers")
    return {"n": len(values), "mean": sum(values) / len(values), "min": min(values), "max": max(values)}


class Task(socketserver.StreamRequestHandler):
    def handle(self):
        try:
            reply = {"result": handle(json.loads(self.rfile.readline()))}
        except (ValueError, TypeError) as exc:
            reply = {"error": str(exc), "code": "bad_args"}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


if __name__ == "__main__":
    path = os.environ["FOGMESH_SOCKET"]
    if os.path.exists(path):
        os.unlink(path)            # left by a container that stopped
    socketserver.ThreadingUnixStreamServer(path, Task).serve_forever()
