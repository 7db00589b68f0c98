"""Layer 7, evaluation: the official metrics, prediction files, ranking diagnostics and the
query-level analysis (paired tests, strata, figures).

May import: amr.util, amr.config, amr.model (span geometry, saliency runs).
"""
