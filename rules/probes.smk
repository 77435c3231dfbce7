# Phase 3b: per-layer linear probes on last-token states (paper protocol), both views.


rule probes:
    input:
        stores=cell_stores,
        prompts=prompt_file,  # MDQA question groups for the grouped split (checked against the store)
    output:
        csv=PROBES,
        summary=PROBES.replace(".csv", ".json"),
    log:
        f"{LOGS}/probes/{{model}}/{{init}}/{{task}}_n{{length}}.log",
    benchmark:
        f"{BENCHMARKS}/probes/{{model}}/{{init}}/{{task}}_n{{length}}.tsv"
    params:
        code=code_digest("probes.py"),
        settings=CFG.section("probes"),
        views=CFG.section("metrics")["views"],
    threads: CFG.execution("probes")["threads"]  # booked cores = torch's threads in the job
    resources:
        mem_mb=max(16000, 1024 * (4 + int(CFG.execution("probes")["max_batch_gib"]))),  # + what runs beside the group
        runtime=60,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/probes.py"


rule all_metrics:
    input:
        cell_paths(TOKEN_METRICS),
        cell_paths(PROBES, TABLE_CELLS),  # `scope: fig3` inits get no probes
