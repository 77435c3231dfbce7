"""benchmarks/paper_floor.py: the paper run's tokens and roofline floor from the config alone,
checked against hand arithmetic (tokens from the paper's prompt counts and lengths, Mamba-2.8B's
parameters counted from its published shapes)."""

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RATES = "gpt-neo-2.7b=102500,pythia-2.8b=91100,mamba-2.8b=78000,mamba2-2.7b=78000,mamba2-130m=500000"


def _run(benchmark_script, *args: str) -> str:
    """``benchmarks/paper_floor.py ARGS``'s ``main`` in this process (``benchmark_script``, the
    fixture); what it printed."""
    paper_floor = benchmark_script("paper_floor")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert paper_floor.main(list(args)) == 0
    return out.getvalue()


def _row(out: str, model: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith(f"| {model} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def _mamba_params(d=2560, layers=64, vocab=50280, inner=5120, state=16, conv=4, rank=160) -> int:
    """Mamba-2.8B by hand: tied embedding, per block in_proj, conv (+bias), x_proj, dt_proj (+bias),
    A_log, D, out_proj, norm; a final norm."""
    block = d * 2 * inner + inner * conv + inner + inner * (rank + 2 * state) + rank * inner + inner
    block += inner * state + inner + inner * d + d
    return vocab * d + layers * block + d


def _minutes(text: str) -> float:
    value, unit = re.match(r"([\d.]+) (s|min|h)", text).groups()
    return float(value) * {"s": 1 / 60, "min": 1, "h": 60}[unit]


def _random_everywhere(tmp_path: Path) -> Path:
    """The paper config with its `random` init at scope all (every length, probes, table rows)."""
    text = (ROOT / "config" / "config.yaml").read_text()
    old = "  - name: random\n    scheme: default\n    scope: fig3\n"
    assert old in text
    path = tmp_path / "random_everywhere.yaml"
    path.write_text(text.replace(old, "  - name: random\n    scheme: default\n"))
    return path


def test_config_arms_count_every_cell_at_its_prompts_and_the_floor_follows_the_params(tmp_path, benchmark_script):
    out = _run(benchmark_script, "--configfile", str(_random_everywhere(tmp_path)), "--rates", RATES)
    # two full arms x 2 tasks x 25,000 prompts x (300 + 1024 + 2048 + 4096) tokens, plus four
    # Fig. 3 inits x 2 tasks x 64 token prompts x 2048 tokens
    ssm_tokens = 2 * 2 * 25_000 * 7468 + 4 * 2 * 64 * 2048
    model, params, n_cells, tokens, floor, rate, at_rate = _row(out, "mamba-2.8b")
    assert (n_cells, tokens) == ("24", f"{ssm_tokens / 1e6:,.1f}M")
    assert params == f"{_mamba_params() / 1e9:.2f}B"
    assert abs(_minutes(floor) - ssm_tokens * 2 * _mamba_params() / 782e12 / 60) < 0.1
    assert abs(_minutes(at_rate) - ssm_tokens / 78_000 / 60) < 0.01 * ssm_tokens / 78_000 / 60
    # Transformers stop at their 2K context: 300 + 1024 + 2048 tokens
    assert _row(out, "gpt-neo-2.7b")[3] == f"{(2 * 2 * 25_000 * 3372 + 4 * 2 * 64 * 2048) / 1e6:,.1f}M"
    walls = dict(re.findall(r"^\| (\d) \| ([\d.]+ (?:s|min|h)) \|", out, flags=re.M))
    total = _minutes(_row(out, "**total**")[4])
    assert abs(_minutes(walls["1"]) - total) < 0.01 * total
    assert total / 8 <= _minutes(walls["8"]) < total / 8 * 1.1  # longest first packs 112 cells closely


def test_paper_arms_run_only_the_pretrained_arm_at_full_size(tmp_path, benchmark_script):
    out = _run(benchmark_script, "--configfile", str(_random_everywhere(tmp_path)), "--arms", "paper")
    # pretrained at every length that fits (6 cells per Transformer, 8 per SSM), every other init
    # (random and the four Fig. 3 ones) at 2K on both tasks
    assert _row(out, "**total**")[2] == str(2 * 6 + 3 * 8 + 5 * 5 * 2)
    assert _row(out, "mamba-2.8b")[3] == f"{(2 * 25_000 * 7468 + 5 * 2 * 64 * 2048) / 1e6:,.1f}M"
    # the paper config as shipped runs exactly the paper's workload
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert [line for line in _run(benchmark_script).splitlines() if line.startswith("| ")] == table
