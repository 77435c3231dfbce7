# reprflow: contextual representation flow in Transformers and SSMs (Hoang et al. 2025).
# This file only wires: config, validation, phase rule files and the default target.
# Default config: the paper setup. Demo: --configfile config/demo.yaml (replaces it wholesale).

if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/training.smk"
include: "rules/prompts.smk"
include: "rules/activations.smk"
include: "rules/metrics.smk"
include: "rules/probes.smk"
include: "rules/report.smk"
include: "rules/theory.smk"


rule all:
    default_target: True
    input:
        final_targets(CFG),
