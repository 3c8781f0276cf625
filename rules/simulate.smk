# Minimisation and the protocol's MD stages. Only done.json is declared as output: a stage that stops
# before its wall-time limit (exit 75) keeps its checkpoint and partial trajectory, and the retry
# resumes it. GPU and thread requests come from the profile (set-resources / set-threads); without a
# profile, MD jobs share the cores among the unfinished simulations (md_threads, rules/common.smk), and
# OpenMM's CPU platform uses the threads Snakemake gives the job; on local execution a running CPU stage
# grows onto cores that stay idle, up to --cores (md_max_threads; pipeline/platforms.py IdleCoreWidening).


rule minimise:
    input:
        system=rules.parametrise.output.system,
    output:
        done=f"{RESULTS}/{{system}}/rep{{replica}}/{{T}}K/md/minimise/done.json",
    params:
        cfg=lambda w: sections("protocol", "platform"),
        params_dir=lambda w, input: os.path.dirname(input.system),
        out=lambda w, output: os.path.dirname(output.done),
    threads: md_threads
    resources:
        mem_mb=job_mem_mb("minimise"),
        runtime=job_runtime("minimise"),
    log:
        f"{LOGS}/minimise/{{system}}_rep{{replica}}_{{T}}K.log",
    shell:
        "OPENMM_CPU_THREADS={threads} spemd minimise --config-json {params.cfg:q} "
        "--params {params.params_dir} --out {params.out} > {log} 2>&1"


rule md_stage:
    input:
        system=rules.parametrise.output.system,
        start=previous_state,
    output:
        done=f"{RESULTS}/{{system}}/rep{{replica}}/{{T}}K/md/{{stage}}/done.json",
    params:
        cfg=lambda w: sections("protocol", "platform", "seed"),
        params_dir=lambda w, input: os.path.dirname(input.system),
        start=lambda w, input: os.path.join(os.path.dirname(input.start), "state.xml"),
        out=lambda w, output: os.path.dirname(output.done),
    threads: md_threads
    resources:
        # a resource, not a param: it changes with --cores, and a param change would rerun every stage
        md_max_threads=md_max_threads,
        mem_mb=job_mem_mb("md_stage"),
        runtime=job_runtime("md_stage"),
    log:
        f"{LOGS}/md/{{system}}_rep{{replica}}_{{T}}K_{{stage}}.log",
    shell:
        "OPENMM_CPU_THREADS={threads} SPEMD_MD_MAX_THREADS={resources.md_max_threads} spemd md --config-json {params.cfg:q} --params {params.params_dir} "
        "--stage {wildcards.stage} --temperature {wildcards.T} --replica {wildcards.replica} "
        "--start {params.start} --out {params.out} >> {log} 2>&1"
