"""sse-chat: stream chat completions as Server-Sent Events, resumable by Last-Event-ID.

Importing this package runs nothing and imports nothing heavy; build the WSGI
application with :func:`sse_chat.app.create_app`.
"""

__version__ = "0.1.0"
