"""The streaming core: starting and resuming streams in plain values
(:mod:`.generation`), the producer that runs a backend in its own greenlet and
appends each event to the event log (:mod:`.producer`), the reader that is one
HTTP response's body (:mod:`.reader`), idempotent starts (:mod:`.idempotency`),
and :class:`~.services.Services`, the objects one app holds. It may import the
protocol, the foundation, the event log, the backends, the server tools and
access; never Flask's request globals or an HTTP surface (docs/architecture.md,
"Parts and their arrows")."""
