"""Sphinx configuration of the zexec documentation (``docs/``, MyST Markdown).

Build: ``.venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html``
(``tests/unit/test_docs.py`` builds it so, warnings as errors).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "zexec"
author = "the zexec developers"
copyright = "the zexec developers"  # noqa: A001 - Sphinx's name
extensions = ["myst_parser", "sphinx.ext.autodoc", "zexec_docs"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]
html_theme = "furo"
html_title = "zexec"
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}
