"""acula training: dataset adapters, report synthesis, encoders, alignment, benchmark and export.

Importing this package must not import torch: the ``acula`` CLI lives here and must work in a service-only
install. Modules that need torch import it themselves.
"""
