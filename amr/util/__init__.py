"""Layer 0, utilities: the error base every deliberate error derives from, atomic file writes
and JSON reading, and the project's import graph (what a script can execute, its code digest).

May import: nothing of amr.
"""
