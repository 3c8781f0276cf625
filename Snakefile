# spemd workflow: build -> parametrise -> minimise -> MD stages -> analyse -> summary/report.
# Thin by design: every rule calls one `spemd` subcommand; the science lives in the packages.
# Runtime resources (threads, GPUs, queues) live in profiles/ (see docs/running.md).



# The embedded small default, unless the user gives --configfile (which then replaces it, not merges).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"


wildcard_constraints:
    system="|".join(SYSTEMS),
    replica=r"\d+",
    T=r"[0-9.]+",
    stage="|".join(STAGES),
    metal="FeNi|Fe|Ni|Cu",


include: "rules/build.smk"
include: "rules/simulate.smk"
include: "rules/analyse.smk"
include: "rules/report.smk"


rule all:
    input:
        summary_table(),
        all_analysis_outputs(),
        rules.study.output,
    default_target: True
