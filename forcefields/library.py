"""Where the force-field XML files live and which ones a configuration uses."""

from __future__ import annotations

from pathlib import Path

from spemd.errors import ConfigError, one_of
from spemd.resources import forcefield_dir, forcefield_xml

FF_DIR = forcefield_dir()
SODIUM_SETS = {"aqvist": "sodium_aqvist.xml", "joung_cheatham_spce": "sodium_joung_cheatham_spce.xml"}
MOF_XML = "mof.xml"


xml_path = forcefield_xml


def xml_files(ff_cfg: dict, with_mof: bool) -> list[Path]:
    """The XML files for a system: PEO, TFSI, the chosen Na+ set, and the MOF when there is a slab."""
    sodium = ff_cfg.get("sodium", "aqvist")
    if sodium not in SODIUM_SETS:
        raise ConfigError(one_of("forcefield.sodium", sodium, list(SODIUM_SETS)))
    files = [xml_path("peo.xml"), xml_path("tfsi.xml"), xml_path(SODIUM_SETS[sodium])]
    if with_mof:
        mof = xml_path(MOF_XML)
        if not mof.is_file():
            raise ConfigError(f"{mof}: MOF force field file not found (needed because the box has a MOF slab)")
        files.append(mof)
    return files
