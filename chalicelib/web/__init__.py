"""The HTTP edge's toolkit: with ``app.py``, the only code that knows about Chalice and HTTP."""
