"""Errors every layer may raise; the CLI prints them as one paragraph (docs/design.md, "Architecture")."""


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback, exit status 2."""
