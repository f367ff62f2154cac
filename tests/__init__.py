"""The project's tests. ``ROOT`` is the checkout they run from (its ``docs/``, its
``gunicorn.conf.py``): the installed package knows no checkout."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
