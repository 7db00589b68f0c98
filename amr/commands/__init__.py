"""One module per ``amr`` subcommand: ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.

Modules import heavy dependencies inside ``run`` so that ``amr --help`` stays fast.
"""
