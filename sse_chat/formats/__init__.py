"""Formats: pure translation of this service's events into the shapes of other
APIs: OpenAI's Chat Completions chunks and objects (:mod:`.chat_completions`) and
the Responses API's objects and numbered streaming events (:mod:`.responses`).
No I/O, no Flask; it may import the protocol, the foundation, the backends'
values and request bodies (docs/architecture.md, "Parts and their arrows")."""
