"""Analysis of production trajectories (MDAnalysis-based; nm and ps inside, see spemd.units).

Modules: rdf (g(r), n(r), first shell), msd (FFT MSD, D with block uncertainty, replica combination,
Yeh-Hummer), conductivity (Nernst-Einstein, Einstein-Helfand, t+), pairing (free/CIP/AGG, residence
times), arrhenius (Arrhenius/VFT), plots, production (``analyse_production``, the workflow entry),
summary (``summarise``), cli (``spemd analyse``), synthetic (test/benchmark Universes).
"""
