"""Layer 4, feature extraction from raw audio (``data.source: extract``): decode, cut 1-s
windows, encode, write the official npz layout (SPEC §2, §2.1). See :mod:`amr.extract.run`.

May import: amr.util, amr.config, amr.data.
"""
