# Training phase: models with a `train:` block are trained from scratch and saved with
# save_pretrained to their hf_id ({out_dir}/data/models/{model}); the pretrained init then loads
# them through from_pretrained like hub models. Checkpoints ({out_dir}/results/training/{model}/checkpoint.pt)
# are not outputs, so a killed job resumes from them. See docs/training.md.
from reprflow.training.corpus import NQ_OPEN
from reprflow.training.recipe import TrainSpec

TRAINED = [m.name for m in CFG.models if m.train is not None]
TRAIN_METRICS = out("results/training/{model}/metrics.csv")
TRAIN_SUMMARY = out("results/training/{model}/summary.json")
TRAIN_CHECKPOINT = out("results/training/{model}/checkpoint.pt")


def _train_recipe(wildcards):
    """The science keys of the train block (execution keys do not rerun training)."""
    block = dict(CFG.model(wildcards.model).train)
    return {k: v for k, v in sorted(block.items()) if k not in TrainSpec.EXECUTION_KEYS}


def _train_gpus(wildcards):
    """GPUs of a training job: as an extraction job (execution.extraction.gpus), or 0 for a recipe
    that trains on the CPU (``device: cpu``)."""
    if CFG.model(wildcards.model).train.get("device") == "cpu":
        return 0
    return CFG.execution("extraction")["gpus"]


def _train_corpus(wildcards):
    """The shipped corpus file a model trains on (nq_open), or none (gcide: a system package)."""
    corpus = CFG.model(wildcards.model).train["corpus"]
    return [NQ_OPEN] if corpus == "nq_open" else []


ruleorder: train_model > build_tiny_model


rule train_model:
    input:
        # read by the job, so an edit retrains: the tokenizer (package data) and the corpus
        tokenizer=lambda w: f"reprflow/data/tokenizers/{CFG.model(w.model).tokenizer}/tokenizer.json",
        corpus=_train_corpus,
    output:
        model=directory(MODELS),
        metrics=TRAIN_METRICS,
        summary=TRAIN_SUMMARY,
    log:
        f"{LOGS}/training/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/training/{{model}}.tsv"
    wildcard_constraints:
        model="|".join(TRAINED) or "(?!x)x",
    params:
        code=code_digest("train.py"),
        family=lambda w: CFG.model(w.model).family,
        tokenizer=lambda w: CFG.model(w.model).tokenizer,
        positions=lambda w: CFG.model(w.model).max_context,
        recipe=_train_recipe,
        checkpoint=lambda w: TRAIN_CHECKPOINT.format(model=w.model),
    priority: GATE_PRIORITY
    threads: lambda w: CFG.model(w.model).train.get("threads") or 2
    resources:
        gpu=_train_gpus,
    conda:
        # --sdm conda: a GPU job gets the CUDA environment (torch with CUDA, mamba-ssm's kernels)
        lambda w: "../envs/gpu.yaml" if _train_gpus(w) else "../envs/cpu.yaml"
    script:
        "../workflow_scripts/train.py"


rule all_trained:
    input:
        [TRAIN_SUMMARY.format(model=m) for m in TRAINED],
