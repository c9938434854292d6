"""Laid over every hidden copy of convgrade's own packages inside the sandbox.

The mask over such a folder is empty, which Python would still import as an empty namespace
package; this ``__init__`` makes the import fail exactly as for a package that is not there.
"""

raise ModuleNotFoundError(f"No module named {__name__!r}", name=__name__)
