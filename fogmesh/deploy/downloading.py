"""One bundle's payload coming in over MQTT (the receiver's thread): the
chunks it lacks subscribed to a window at a time (retained, so a
subscription is the request), each checked against its digest as it
arrives and written in place in the staging file, so a cut link or a
restart resumes at the first missing chunk. Which chunks to ask for next,
and when a download has stalled or must give up, is :mod:`fogmesh.deploy.fetching`'s
(pure); this is its shell. The receiver calls :meth:`Download.ask` after
each turn (a message, or ``poll_s`` without one); whether a failure is tried
again is :mod:`fogmesh.deploy.flow`'s."""

from __future__ import annotations

import logging
from typing import Any, BinaryIO, Callable

from fogmesh.deploy.fetching import ChunkFetch
from fogmesh.deploy.manifest import Manifest, sha256
from fogmesh.errors import DeployRefused
from fogmesh.mqtt import Message, MqttClient
from fogmesh.topics import Topics

__all__ = ["Download"]


class Download:
    def __init__(self, manifest: Manifest, have: set[int], file: BinaryIO, *, client: MqttClient, topics: Topics,
                 clock: Callable[[], float], options: Any, log: logging.LoggerAdapter[Any] | logging.Logger) -> None:
        self.manifest, self.file, self.client, self.topics, self.clock, self.log = \
            manifest, file, client, topics, clock, log
        self.o = options
        self.fetch = ChunkFetch.resuming(len(manifest.chunks), have, clock(), window=options.window,
                                         stall_s=options.stall_s, give_up_s=options.give_up_s)
        self.received = 0          # chunk bytes taken in (repeats included): the report's ``received``
        self.poll_s = min(1.0, options.stall_s)     # how often :meth:`ask` looks at the least
        self._prefix = f"{topics.root}/deploy/chunks/{manifest.digest}/"
        if have:
            log.info("deployment: resuming %s at %d of %d chunks", manifest.label, len(have), self.fetch.count)

    @property
    def done(self) -> bool:
        return self.fetch.done

    @property
    def progress(self) -> float:
        return self.fetch.progress

    def ask(self) -> DeployRefused | None:
        """Fill the window, ask again for a stalled one; or why the download failed."""
        fetch, m, o = self.fetch, self.manifest, self.o
        for i in fetch.to_ask():
            self.client.subscribe(self.topics.deploy_chunk(m.digest, i), 1, timeout=None)
        now = self.clock()
        bad = fetch.corrupt()
        if bad is not None:
            return DeployRefused("digest_mismatch", f"{m.label}: chunk {bad} on the broker does not match "
                                 f"its digest ({fetch.tries} tries); push the bundle again")
        if fetch.given_up(now):
            return DeployRefused("download_stalled", f"{m.label}: no chunk for {o.give_up_s:.0f} s "
                                 f"({len(fetch.missing)} of {fetch.count} missing)")
        if fetch.stalled(now):
            for i in fetch.again(now):
                self.client.subscribe(self.topics.deploy_chunk(m.digest, i), 1, timeout=None)
        return None

    def close(self) -> None:
        """No more chunks asked for; what came is on disk."""
        for i in self.fetch.asked:
            self.client.unsubscribe(self.topics.deploy_chunk(self.manifest.digest, i))
        self.fetch.asked.clear()
        self.file.close()

    def take(self, msg: Message) -> None:
        """A chunk message (of this bundle or not)."""
        m, fetch = self.manifest, self.fetch
        if not msg.topic.startswith(self._prefix) or not msg.payload:
            return
        try:
            index = int(msg.topic[len(self._prefix):])
            want = m.chunks[index]
        except (ValueError, IndexError):
            return
        ok = sha256(msg.payload) == want
        self.received += len(msg.payload)
        if fetch.got(index, ok=ok, now=self.clock()):
            self.client.unsubscribe(msg.topic)
            self.file.seek(index * m.chunk_size)
            self.file.write(msg.payload)
        elif not ok:
            self.log.warning("deployment: chunk %d of %s does not match its digest; asking again", index, m.label)
            if fetch.corrupt() is None:
                self.client.subscribe(msg.topic, 1, timeout=None)    # the retained copy again
