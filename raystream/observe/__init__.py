"""Internal: watching jobs — what a job's numbers mean, where they go, and how a person sees them.

- ``samples.py``: a job master's ``metrics()`` answer as plain samples per task and operator;
  rates, counter increments and watermark lag between two samples (no Ray).
- ``graph.py``: the execution plan as a graph of tasks and its layout for drawing (no Ray).
- ``ray_export.py``: the job master's periodic export of those samples through
  ``ray.util.metrics`` (Prometheus, Ray dashboard).
- ``progress.py``: the progress line ``execute()`` shows on a terminal.
- ``ui.py`` and ``ui_page.html``: ``raystream ui``, a page per job served on loopback.
"""
