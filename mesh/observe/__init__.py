"""Observability: what a node tells operators about itself.

* :mod:`mesh.observe.histogram` — log-bucketed latency histograms (HDR-style: fixed relative
  error, exact tail percentiles), cheap enough for the per-handler hot path.
* :mod:`mesh.observe.health` — the health score of the design document (section 5.1) over a
  sliding window, per node and for the mesh.
* :mod:`mesh.observe.metrics` — Prometheus metrics: a per-node registry whose collector reads
  the node's own state at scrape time, served over HTTP on the node's event loop.
* :mod:`mesh.observe.web` — the live web page of the mesh (``page.html``/``.js``/``.css``),
  over :mod:`mesh.observe.http`, the small HTTP server both share.
* :mod:`mesh.observe.logs` — structured log lines (text, key=value, JSON) carrying the trace
  id of the envelope being handled.
"""
