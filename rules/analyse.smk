# Analysis of each run's production stage, and the table comparing systems.


rule analyse:
    input:
        params=rules.parametrise.output.forcefield,
        production=f"{RESULTS}/{{system}}/rep{{replica}}/{{T}}K/md/{PRODUCTION}/done.json",
    output:
        transport=f"{RESULTS}/{{system}}/rep{{replica}}/{{T}}K/analysis/transport.json",
        figures=report(
            directory(f"{RESULTS}/{{system}}/rep{{replica}}/{{T}}K/analysis/figures"),
            patterns=["{figure}.png"],
            caption="../report/run_figures.rst",
            category="Runs",
            subcategory="{system}, {T} K",
            labels={"system": "{system}", "T (K)": "{T}", "replica": "{replica}", "figure": "{figure}"},
        ),
    params:
        cfg=lambda w: sections("analysis"),
        params_dir=lambda w, input: os.path.dirname(input.params),
        production=lambda w, input: os.path.dirname(input.production),
        out=lambda w, output: os.path.dirname(output.transport),
    resources:
        mem_mb=job_mem_mb("analyse"),
        runtime=job_runtime("analyse"),
    log:
        f"{LOGS}/analyse/{{system}}_rep{{replica}}_{{T}}K.log",
    shell:
        "spemd analyse-run --config-json {params.cfg:q} --params {params.params_dir} "
        "--production {params.production} --temperature {wildcards.T} --system {wildcards.system} "
        "--replica {wildcards.replica} --out {params.out} > {log} 2>&1"


rule summarise:
    input:
        all_analysis_outputs(),
    output:
        summary_table(),
    log:
        f"{LOGS}/summarise.log",
    shell:
        "spemd summarise --out {output} {input} > {log} 2>&1"
