"""Where the force-field XML files live and which ones a configuration uses."""

from __future__ import annotations

from pathlib import Path

from spemd.errors import ConfigError, InputError, one_of
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


def _xml_root(path: Path, what: str):
    """The parsed XML root of `path`; InputError naming the file and the parser's line for bad XML."""
    import xml.etree.ElementTree as ET

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file; expected {what}")
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise InputError(f"{path}: not valid XML ({exc}); expected {what} - truncated or damaged?") from None


#: mof.xml's template for the Fe of a mixed FeNi paddlewheel (type mof_FeNiFe): a residue FE bonded to a Ni
FENI_FE_TEMPLATE = "FE_FENI"


class _PaddlewheelIronMatcher:
    """OpenMM template matcher: residue FE -> FE_FENI when its paddlewheel partner is Ni, else FE.

    The two templates have the same graph (one Fe, five external bonds), so graph matching alone cannot
    tell them apart; the partner can. Other residues fall through to graph matching (None). The loaded
    templates are read from ForceField._templates (OpenMM 8.6 has no public accessor).
    """

    def __init__(self):
        self._topology, self._elements = None, None

    def __call__(self, ff, res, bonded_to_atom, ignore_external_bonds, ignore_extra_particles):
        if res.name != "FE" or FENI_FE_TEMPLATE not in ff._templates:
            return None
        top = res.chain.topology
        if top is not self._topology:  # one pass over the atoms per topology, not per residue
            self._topology, self._elements = top, [a.element.symbol if a.element else "" for a in top.atoms()]
        atom = next(iter(res.atoms()))
        partner_ni = any(self._elements[j] == "Ni" for j in bonded_to_atom[atom.index])
        return ff._templates[FENI_FE_TEMPLATE if partner_ni else "FE"]


def load_forcefield(files):
    """An openmm.app.ForceField from `files`, loaded one by one so that a bad file is named.

    With mof.xml, the Fe of a FeNi paddlewheel gets its own template (:class:`_PaddlewheelIronMatcher`).
    """
    from openmm import app

    ff = app.ForceField()
    ff.registerTemplateMatcher(_PaddlewheelIronMatcher())
    for f in files:
        _xml_root(f, "a force-field XML file")
        try:
            ff.loadFile(str(f))
        except Exception as exc:  # OpenMM raises ValueError/KeyError with multi-line text
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{f}: cannot be loaded as an OpenMM force field ({first})") from None
    return ff


#: attributes of a serialized System that are not numbers (everything else must parse as one: OpenMM's
#: reader takes a non-number such as q="abc" as 0 without a word)
SYSTEM_XML_TEXT_ATTRIBUTES = frozenset({"openmmVersion", "type", "name", "energy", "expression"})


def check_system_xml(path) -> None:
    """InputError naming the element, its position and the attribute if system.xml holds a non-number."""
    import math

    root = _xml_root(path, "a serialized openmm.System (system.xml)")
    counts = {}
    for el in root.iter():
        counts[el.tag] = counts.get(el.tag, 0) + 1
        for attr, value in el.attrib.items():
            if attr in SYSTEM_XML_TEXT_ATTRIBUTES:
                continue
            try:
                ok = not math.isnan(float(value))
            except ValueError:
                ok = False
            if not ok:
                raise InputError(
                    f'{path}: <{el.tag}> number {counts[el.tag]} has {attr}="{value}", not a number; '
                    "rerun the force-field step (spemd parametrise)"
                )
