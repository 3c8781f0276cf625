"""Run stages of molecular dynamics for polymer-electrolyte boxes, plus the shared plumbing.

Shared by every package: :mod:`spemd.errors` (the exception types), :mod:`spemd.units`
(the one place nm <-> Angstrom <-> cm conversions live), :mod:`spemd.provenance` (what produced an
output) and :mod:`spemd.files` (atomic writes).
"""
