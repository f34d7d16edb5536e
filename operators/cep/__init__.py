"""Internal: complex event processing (Flink CEP) — pattern, NFA, shared buffer, operator.

The public names are re-exported by :mod:`raystream.cep`.
"""
