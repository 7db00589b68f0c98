"""Layer 9, reporting: what the pipeline's systems scored (``systems``: metrics files, Table 1,
curves), the analysis stage's report, the result tables, the Table-2 grid and the DCASE
submission zip.

May import: every layer below: amr.util ... amr.engine.
"""
