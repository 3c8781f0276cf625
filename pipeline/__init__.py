"""Run stages of molecular dynamics for polymer-electrolyte boxes, plus the shared plumbing.

Shared by every package: :mod:`pipeline.errors` (the exception types), :mod:`pipeline.units`
(the one place nm <-> Angstrom <-> cm conversions live), :mod:`pipeline.provenance` (what produced an
output) and :mod:`pipeline.files` (atomic writes).
"""
