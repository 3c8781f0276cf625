# Build a box and turn it into an OpenMM System.


rule build:
    output:
        box=f"{RESULTS}/{{system}}/rep{{replica}}/build/box.pdb",
        composition=f"{RESULTS}/{{system}}/rep{{replica}}/build/composition.json",
    params:
        cfg=lambda w: sections("build", "seed", "forcefield", systems={w.system: CONFIG["systems"][w.system]}),
        out=lambda w, output: os.path.dirname(output.box),
    resources:
        mem_mb=job_mem_mb("build"),
        runtime=job_runtime("build"),
    log:
        f"{LOGS}/build/{{system}}_rep{{replica}}.log",
    shell:
        "spemd build --config-json {params.cfg:q} --system {wildcards.system} "
        "--replica {wildcards.replica} --out {params.out} > {log} 2>&1"


rule calibrate:
    # only with calibration.refit (rules/common.smk calibration_input); otherwise the shipped terms are used
    output:
        f"{RESULTS}/calibration/calibration.json",
    params:
        cfg=lambda w: sections("forcefield", "calibration"),
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/calibrate/calibration.log",
    shell:
        "spemd calibrate --config-json {params.cfg:q} --out {params.out} > {log} 2>&1"


rule parametrise:
    input:
        unpack(calibration_input),
        box=rules.build.output.box,
    output:
        system=f"{RESULTS}/{{system}}/rep{{replica}}/params/system.xml",
        topology=f"{RESULTS}/{{system}}/rep{{replica}}/params/topology.pdb",
        forcefield=f"{RESULTS}/{{system}}/rep{{replica}}/params/forcefield.json",
    params:
        # calibration.targets_eV only where terms are used (parametrise checks them against the terms' file)
        cfg=lambda w: sections("forcefield", **({"calibration": CONFIG["calibration"]} if calibration_input(w) else {})),
        out=lambda w, output: os.path.dirname(output.system),
        calibration=lambda w, input: f"--calibration {input.calibration}" if "calibration" in input.keys() else "",
    resources:
        mem_mb=job_mem_mb("parametrise"),
        runtime=job_runtime("parametrise"),
    log:
        f"{LOGS}/parametrise/{{system}}_rep{{replica}}.log",
    shell:
        "spemd parametrise --config-json {params.cfg:q} --box {input.box} {params.calibration} --out {params.out} > {log} 2>&1"
