# Build a box and turn it into an OpenMM System.


rule build:
    output:
        box="results/{system}/rep{replica}/build/box.pdb",
        composition="results/{system}/rep{replica}/build/composition.json",
    params:
        cfg=lambda w: sections("build", "seed", "forcefield", systems={w.system: CONFIG["systems"][w.system]}),
        out=lambda w, output: os.path.dirname(output.box),
    log:
        "logs/build/{system}_rep{replica}.log",
    shell:
        "spemd build --config-json {params.cfg:q} --system {wildcards.system} "
        "--replica {wildcards.replica} --out {params.out} > {log} 2>&1"


rule calibrate:
    output:
        "results/calibration/{metal}/calibration.json",
    params:
        cfg=lambda w: sections("forcefield", "calibration"),
        out=lambda w, output: os.path.dirname(output[0]),
    log:
        "logs/calibrate/{metal}.log",
    shell:
        "spemd calibrate --config-json {params.cfg:q} --metal {wildcards.metal} --out {params.out} > {log} 2>&1"


rule parametrise:
    input:
        unpack(calibration_input),
        box=rules.build.output.box,
    output:
        system="results/{system}/rep{replica}/params/system.xml",
        topology="results/{system}/rep{replica}/params/topology.pdb",
        forcefield="results/{system}/rep{replica}/params/forcefield.json",
    params:
        cfg=lambda w: sections("forcefield"),
        out=lambda w, output: os.path.dirname(output.system),
        calibration=lambda w, input: f"--calibration {input.calibration}" if "calibration" in input.keys() else "",
    log:
        "logs/parametrise/{system}_rep{replica}.log",
    shell:
        "spemd parametrise --config-json {params.cfg:q} --box {input.box} {params.calibration} --out {params.out} > {log} 2>&1"
