"""Admission: the one count of inference requests in the service, and the one place that refuses them.

A request is admitted when its headers have been read, before a byte of its body, and holds its slot until its
response has been sent, through every stage: receiving the body, waiting for a decode worker, decoding,
waiting for a batch, inference, probes. Counting anywhere later (after the upload, after decoding) lets
excess requests cost the event loop their whole upload before being refused, and lets uploads that arrive
slowly pile up uncounted; counting in several places lets the counts disagree. So the runtime owns one
:class:`Admission`, the HTTP middleware enters it, and nothing else counts.

A slot is held for a bounded time whatever the client does: the middleware gives every admitted request one
deadline (``request_timeout_s``) for all of it, body included. What the limit bounds is therefore memory
(each admitted request holds at most its upload and its decoded audio at the model's rate) and how long a
client waits, not how fast anyone may send.
"""

from __future__ import annotations

from acula.service.core.errors import Overloaded


class Admission:
    """At most ``limit`` requests at once; :meth:`enter` refuses the next with :class:`Overloaded`."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the admission limit must be at least 1, not {limit}")
        self.limit = limit
        self.active = 0

    def enter(self) -> None:
        """Take a slot or raise :class:`Overloaded` (single-threaded: called on the event loop only)."""
        if self.active >= self.limit:
            raise Overloaded(f"{self.active} requests are already in the service (limit {self.limit})")
        self.active += 1

    def leave(self) -> None:
        self.active -= 1
