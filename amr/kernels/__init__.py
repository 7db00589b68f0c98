"""Layer 3, CPU kernels: dropout with counter-based masks and Mamba's selective scan, each a
small C kernel built with the system compiler at first use (``native``) and its torch twin.

May import: amr.util, amr.config.
"""
