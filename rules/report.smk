# The cross-system study (analysis/study.py: replicas combined, figures, comparison with the paper and
# with measured densities) and what `snakemake --report results/report.html` shows of it. Which files
# the study writes and how the report files them comes from analysis.study_render.report_layout.
from spemd.analysis.study_render import report_layout


report: "../report/workflow.rst"


STUDY_DIR = f"{RESULTS}/study"
STUDY_CATEGORY = "Study across systems"
# NPT density for the model-vs-experiment check: the last NPT stage of the protocol (None: no check).
NPT_STAGE = ([s["name"] for s in CONFIG["protocol"]["stages"] if s.get("ensemble") == "NPT"] or [None])[-1]
STUDY_OUTPUTS = [  # (a line may not start with `report(`: Snakemake's parser reads that as the report keyword)
    (report(f"{STUDY_DIR}/{e['name']}", caption=f"../report/{e['caption']}.rst", category=STUDY_CATEGORY,
            subcategory=e["subcategory"], labels=e["labels"]) if e["report"] else f"{STUDY_DIR}/{e['name']}")
    for e in report_layout(CONFIG["systems"], CONFIG["temperatures_K"])
]
STUDY_NPT_DONE = (
    expand(f"{RESULTS}/{{system}}/rep{{replica}}/{{T}}K/md/{{stage}}/done.json", system=SYSTEMS, replica=REPLICAS,
           T=TEMPERATURES, stage=NPT_STAGE) if NPT_STAGE else []
)


rule study:
    input:
        transport=all_analysis_outputs(),
        composition=expand(f"{RESULTS}/{{system}}/rep{{replica}}/build/composition.json", system=SYSTEMS, replica=REPLICAS),
        npt=STUDY_NPT_DONE,
    output:
        STUDY_OUTPUTS,
    params:
        cfg=lambda w: sections("systems"),
        npt=f"--npt-stage {NPT_STAGE}" if NPT_STAGE else "--npt-stage ''",
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/study.log",
    shell:
        "spemd study --config-json {params.cfg:q} {params.npt} --out {params.out} {input.transport} > {log} 2>&1"
