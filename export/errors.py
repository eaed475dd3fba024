"""The one exception type `bua-export` raises for problems a user can fix."""
from __future__ import annotations


class ExportError(Exception):
    """A problem with the export's inputs or environment; the message says what and how to fix it.

    The CLI prints the message without a traceback and exits with status 2.
    """
