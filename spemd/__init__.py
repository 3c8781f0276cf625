"""spemd: molecular dynamics of solid polymer electrolytes (PEO/NaTFSI with and without M3(BTC)2 hosts).

The ground floor of the package, imported by every other part and importing none of them:
:mod:`spemd.errors` (the exception types), :mod:`spemd.units` (the one place nm <-> Angstrom <-> cm
conversions live), :mod:`spemd.files` (atomic writes), :mod:`spemd.provenance` (what produced an
output), :mod:`spemd.config` (+ ``schema/``: loading and validating the workflow configuration) and
:mod:`spemd.resources` (where the packaged data files are).

On top of it, imports point one way (docs/architecture.md)::

    spemd (plumbing) <- spemd.systems <- spemd.forcefields
    spemd (plumbing) <- spemd.analysis
    everything       <- spemd.pipeline (engine, CLI, Snakemake glue)
"""
