"""``python -m sse_chat``: the ``sse-chat`` command (:mod:`sse_chat.cli.main`)."""

from sse_chat.cli.main import main

if __name__ == "__main__":
    main()
