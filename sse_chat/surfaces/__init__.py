"""The HTTP surfaces: one Flask blueprint per surface (the event-stream endpoints
and the page in :mod:`.routes`, the OpenAI-compatible Chat Completions in
:mod:`.openai_api`, the Responses API in :mod:`.responses_api`, browser sessions
in :mod:`.session_routes`) and the helpers they share (:mod:`.web`). Views are
thin: they read the request (request bodies), ask access who is asking, and start
or resume a stream through the streaming core, translating its events with the
formats. It may import every part below it (protocol, foundation, event log,
backends, access, request bodies, formats, streaming core), never the app
(docs/architecture.md, "Parts and their arrows")."""
