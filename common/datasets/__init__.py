"""Dataset tooling: one module per dataset with its labels, split lists, preparers and phantom.

- ``acdc``, ``la``, ``brats``, ``pancreas``, ``isles``: one dataset each (the split list files themselves stay in
  ``common/data/splits/``).
- ``preparer``: the skeleton every preparer runs; ``prepare``: the command ``python -m common.data.prepare``.
- ``phantom_parts``: what the phantoms share (types, geometry, the brain); ``phantoms``: the generator behind
  ``python -m common.data.phantoms`` and the demo configs' ``ensure_phantom_dataset``.
- ``folder``: writing a dataset folder, shared by preparers and phantoms.

Bundles do not import it while they train or infer: an exported bundle carries it only because its demo config
generates phantoms (see ``common/tools/export.py``).
"""
