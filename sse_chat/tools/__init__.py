"""Server tools: functions the service offers to the model and runs itself
(docs/tools.md). Their registry, definitions from functions, validated calls run
off the event loop within a timeout (:mod:`.registry`), and the example tool
``current_time`` (:mod:`.example`, ``SSE_CHAT_TOOLS=sse_chat.tools.example:current_time``).
It may import only the foundation; the producer is the one place that runs them
(docs/architecture.md, "Parts and their arrows")."""
