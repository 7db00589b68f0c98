"""Layer 1, configuration: the dataclasses that mirror params.yaml (``schema``), the valid range
of every knob (``constraints``), the one loader (``params``), the budget presets (``presets``)
and where the pipeline's files live (``paths``).

May import: amr.util.
"""
