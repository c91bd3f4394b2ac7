"""Online serving: the Ray Serve application behind trt_serve.py (``app``, ``server``, ``payloads``) and the
Triton model repository export (``triton``). Serving imports neither torch nor the exporter."""
