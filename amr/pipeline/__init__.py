"""Layer 10, pipeline: dvc.yaml derived from params.yaml and the stage scripts (``dag``), the
runtime every stage script starts with (``stage``), and Table 2 over a cluster (``cluster``).

May import: every layer below: amr.util ... amr.reporting.
"""
