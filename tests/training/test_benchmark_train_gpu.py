"""benchmarks/train_gpu.py runs end to end at toy size on the CPU: the Mamba-1 paths side by
side (transformers' torch fallback in its subprocess with the compiled packages hidden), the
loop's own training step, the table printed last and the loss falling."""

import json


def test_quick_cpu_run_prints_the_table(tmp_path, benchmark_script, capfd):
    """The benchmark's main in this process (its own subprocess, transformers' torch fallback with
    the compiled packages hidden, as it starts it)."""
    train_gpu = benchmark_script("train_gpu")
    argv = [
        "--quick",
        "--device",
        "cpu",
        "--families",
        "gpt_neo",
        "mamba",
        "--warmup",
        "1",
        "--steps",
        "2",
        "--out",
        str(tmp_path),
    ]
    code = train_gpu.main(argv)
    out, err = capfd.readouterr()
    assert code == 0, out[-3000:] + err[-3000:]
    table = (tmp_path / "train_gpu.md").read_text()
    assert out.rstrip().endswith(table.rstrip().splitlines()[-1])  # the table is printed last
    every = json.loads((tmp_path / "train_gpu.json").read_text())["rows"]
    neo = {r["path"]: r for r in every if r["family"] == "gpt_neo"}
    assert {p: r["head"] for p, r in neo.items()} == {"hf-eager": "naive", "reprflow-sdpa": "fused"}
    assert all(r["tokens_per_s"] > 0 for r in neo.values())
    # the naive step and train_model's see the same weights and batch: same first loss
    assert abs(neo["hf-eager"]["losses"][0] - neo["reprflow-sdpa"]["losses"][0]) < 0.05
    assert "gpt_neo: train_model's step (reprflow-sdpa, fused head) is" in table
    rows = {r["path"]: r for r in every if r["family"] == "mamba" and r["head"] == "fused"}
    naive = [r for r in every if r["family"] == "mamba" and r["head"] == "naive"]
    assert [r["path"] for r in naive] == ["reprflow-autograd"] and naive[0]["tokens_per_s"] > 0
    assert set(rows) == {"hf-mamba_ssm", "reprflow-mamba_ssm-scan", "reprflow-autograd", "hf-torch"}
    assert rows["hf-mamba_ssm"]["note"].startswith("not available")  # no CUDA here
    auto = rows["reprflow-autograd"]
    assert auto["batch"] == 4 and auto["tokens_per_s"] > 0 and auto["loss_decreased"]
    assert "selective_scan_autograd" in auto["kernels"]
    assert rows["hf-torch"]["tokens_per_s"] > 0 and "torch fallback" in rows["hf-torch"]["kernels"]
    # same seed, same first batch: the first losses of the two paths agree (bf16 head)
    assert abs(rows["hf-torch"]["losses"][0] - auto["losses"][0]) < 0.1
    assert "train_model picks reprflow-autograd" in table and "| mamba | reprflow-autograd | fused | 4 |" in table
