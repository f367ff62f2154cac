"""Access: who may do what. Bearer keys and the owner fingerprint they give
(:mod:`.auth`), browser sessions in signed cookies (:mod:`.sessions`), who is
asking, bearer or cookie, under the Origin rule (:mod:`.identity`, the request
passed in), and stream admission, the 429s (:mod:`.limits`). It may import only
the foundation (``sse_chat.config``, ``sse_chat.errors``, ``sse_chat.metrics``,
``sse_chat.background``) and Werkzeug's request values: no Flask globals, no
event log, no streaming (docs/architecture.md, "Parts and their arrows")."""
