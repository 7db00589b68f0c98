"""Report-grade analysis of development-testing results: per-query results, paired
significance tests with false-discovery-rate control, stratified results, seed spread and
figures (the ``analysis`` stage, ``amr compare``)."""
