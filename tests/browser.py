"""Headless Debian Chromium driven by Playwright (its own browser download cannot
work offline, so it launches the system binary)."""

from __future__ import annotations

import pytest

from sse_chat.testing.servers import require_binary

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def launch_chromium():
    """A context manager yielding a Playwright ``Browser``."""
    chromium = require_binary("chromium")
    sync_api = pytest.importorskip("playwright.sync_api")

    class _Browser:
        def __enter__(self):
            self._playwright = sync_api.sync_playwright().start()
            self.browser = self._playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            return self.browser

        def __exit__(self, *exc):
            self.browser.close()
            self._playwright.stop()

    return _Browser()
