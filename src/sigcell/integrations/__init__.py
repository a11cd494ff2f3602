"""Bridges from sigcell to other libraries.

Each bridge lives in its own submodule and imports its library only when that submodule is imported, so
``import sigcell`` (and ``import sigcell.integrations``) never pulls in an optional dependency.

- :mod:`sigcell.integrations.transformers`: sigmoid attention inside Hugging Face transformers models
  (``pip install "sigcell[hf]"``)::

      from sigcell.integrations.transformers import register

      register()  # attn_implementation="sigmoid"
"""

__all__: list[str] = []
