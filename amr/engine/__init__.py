"""Layer 8, engine: training (``train``: the stage loop, checkpoints, resume, distributed
setup, progress), inference (``predict``), slot-4 fusion (``fuse``) and device placement.

May import: amr.util, amr.config, amr.data, amr.kernels, amr.model, amr.losses, amr.evaluation.
"""
