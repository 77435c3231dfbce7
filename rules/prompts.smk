# Phase 1: KVPR and MDQA prompt sets, one per (tokenizer, task, length).


rule prompts:
    input:
        tokenizer="reprflow/data/tokenizers/{tokenizer}/tokenizer.json",  # package data: not under out_dir
        oracle=CFG.section("prompts")["mdqa_oracle"],
    output:
        prompts=PROMPTS,
        manifest=PROMPTS.replace(".jsonl", ".manifest.json"),
    log:
        f"{LOGS}/prompts/{{tokenizer}}/{{task}}_n{{length}}.log",
    benchmark:
        f"{BENCHMARKS}/prompts/{{tokenizer}}/{{task}}_n{{length}}.tsv"
    params:
        seed=CFG.seed,
        settings=CFG.section("prompts"),
        max_tokens=lambda w: prompt_token_cap(CFG, w.tokenizer, int(w.length)),
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/prompts.py"


rule all_prompts:
    input:
        prompt_files(CFG),
