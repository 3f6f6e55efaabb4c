"""Repository tools: bundle export (``export``), the bundle comparison (``compare``) and its figures (``plots``).

They drive bundles from the repository and import the runtime package, never the reverse; none of them is copied
into an exported bundle. Their commands keep their short names through the entry modules ``common/export.py``
and ``common/compare.py``.
"""
