# Phase 1: prompt sets, one per (tokenizer, task, length): KVPR and MDQA built from their sources
# (rule prompts), a custom task's from its JSONL file (rule custom_prompts, config.custom_tasks).


rule prompts:
    input:
        tokenizer="reprflow/data/tokenizers/{tokenizer}/tokenizer.json",  # package data: not under out_dir
        oracle=lambda w: CFG.section("prompts")["mdqa_oracle"] if w.task == "mdqa" else [],  # MDQA's source
    output:
        prompts=PROMPTS,
        manifest=PROMPTS.replace(".jsonl", ".manifest.json"),
    log:
        f"{LOGS}/prompts/{{tokenizer}}/{{task}}_n{{length}}.log",
    benchmark:
        f"{BENCHMARKS}/prompts/{{tokenizer}}/{{task}}_n{{length}}.tsv"
    params:
        code=lambda w: code_digest("prompts.py", skip=other_tasks_code(w.task)),  # this task's builder only
        seed=CFG.seed,
        settings=lambda w: CFG.prompt_settings(w.task, int(w.length)),  # this set's only
        max_tokens=lambda w: prompt_token_cap(CFG, w.tokenizer, int(w.length)),
    priority: GATE_PRIORITY + 1  # quick, and gates every cell of its set
    resources:
        # peak RSS measured on the CPU (2026-12-05, 25,000 prompts): MDQA at 4096 tokens 4.4 GB,
        # KVPR at 4096 0.9 GB; SLURM's default 2000 MB would kill the large MDQA sets
        mem_mb=lambda w: 6000 if w.task == "mdqa" else 2000,
    wildcard_constraints:
        task="|".join(CFG.paper_tasks),
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/prompts.py"


if CFG.custom_tasks:

    rule custom_prompts:
        input:
            tokenizer="reprflow/data/tokenizers/{tokenizer}/tokenizer.json",
            records=lambda w: CFG.custom_tasks[w.task]["jsonl"],  # a project input: not under out_dir
        output:
            prompts=PROMPTS,
            manifest=PROMPTS.replace(".jsonl", ".manifest.json"),
        log:
            f"{LOGS}/prompts/{{tokenizer}}/{{task}}_n{{length}}.log",
        benchmark:
            f"{BENCHMARKS}/prompts/{{tokenizer}}/{{task}}_n{{length}}.tsv"
        params:
            code=code_digest("custom_prompts.py"),
            spec=lambda w: CFG.prompt_settings(w.task, int(w.length)),  # jsonl, length; not `models`
            max_tokens=lambda w: prompt_token_cap(CFG, w.tokenizer, int(w.length)),
        priority: GATE_PRIORITY + 1  # quick, and gates every cell of its set
        wildcard_constraints:
            task="|".join(CFG.custom_tasks),
        conda:
            "../envs/cpu.yaml"
        script:
            "../workflow_scripts/custom_prompts.py"


rule all_prompts:
    input:
        prompt_files(CFG),
