"""The one base of every error amr raises on purpose.

An :class:`AmrError` means the input, the configuration or the state of the files is not what
amr can work with, and its message names the file or key and the fix. The entry points (stage
scripts, ``amr`` commands) print it as one ``error: ...`` line and exit non-zero; any other
exception is a bug and keeps its traceback.
"""


class AmrError(Exception):
    """A problem the user can fix; the message says what and how."""
