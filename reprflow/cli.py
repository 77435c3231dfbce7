"""The ``reprflow`` command: extraction, token metrics and probes over files, without a workflow.

Three thin subcommands over the library (``reprflow <command> --help`` documents each)::

    reprflow extract prompts.jsonl path/or/hub-id -o acts.zarr   # prompts + model -> store
    reprflow metrics acts.zarr -o metrics/                         # store -> token metrics files
    reprflow probe acts.zarr -o probes.csv                         # store -> probe accuracies

``extract`` reads a prompt file in one of three forms: a prompt set built by the workflow
(``data/prompts/{tokenizer}/{task}_n{length}.jsonl``, checked against its manifest), a JSONL
file of ``{"prompt": str, "label": int}`` records (``label`` optional), or a text file with one
prompt per line. Prompts without a label get label -1 (the store holds them; ``probe`` needs
a label on every prompt and at least two classes). The store is the one the workflow writes (:mod:`reprflow.store`), so
``metrics`` and ``probe`` read either. Errors of the input (a bad record, a missing store, an
output path the file system refuses) end the command with one line naming the culprit and exit
status 1; an option out of its range (``--batch-size 0``) is refused by argparse, exit status 2.

Every heavy import happens inside the command that needs it: ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

_EXAMPLES = """\
examples:
  reprflow extract prompts.jsonl EleutherAI/pythia-160m -o runs/pythia.zarr --token-prompts 16
  reprflow metrics runs/pythia.zarr -o runs/pythia-metrics
  reprflow probe runs/pythia.zarr -o runs/pythia-probes.csv --seeds 0 1 2
"""


# ----------------------------------------------------------------------------- inputs


def _user_records(path: Path, tokenizer: Any) -> list[dict]:
    """Records of a user JSONL (``prompt``, optional int ``label``) or text file (one prompt a line).

    Each record gets ``id`` (``"{index}"``), ``label`` (-1 when absent) and ``n_tokens`` (its
    length under ``tokenizer``, counted as the extractor counts it).
    """
    from reprflow.errors import PromptError
    from reprflow.prompts.custom import read_user_jsonl
    from reprflow.prompts.files import read_user_text

    if path.suffix in (".jsonl", ".json"):
        records = [
            {"id": str(i), "prompt": r["prompt"], "label": r["label"]}
            for i, r in enumerate(read_user_jsonl(path, require_label=False))
        ]
    else:
        lines = [line for line in read_user_text(path).splitlines() if line.strip()]
        records = [{"id": str(i), "prompt": line, "label": -1} for i, line in enumerate(lines)]
    if not records:
        raise PromptError(f"{path}: no prompts (empty file)")
    lengths = [len(ids) for ids in tokenizer([r["prompt"] for r in records])["input_ids"]]
    for rec, n_tokens in zip(records, lengths):
        rec["n_tokens"] = n_tokens
    return records


def _read_prompts(path: Path, tokenizer: Any) -> tuple[list[dict], str, int]:
    """(records, task, length) of a prompt file; see the module docstring for the forms."""
    from reprflow.errors import PromptError
    from reprflow.prompts.dataset import RECORD_KEYS, read_manifest, read_prompt_set

    if not path.is_file():
        raise PromptError(f"{path}: no such prompt file")
    # only to tell the forms apart: the reader of the form reports a byte that is not UTF-8
    first = next((line for line in path.open(encoding="utf-8-sig", errors="replace") if line.strip()), "")
    try:
        head = json.loads(first) if path.suffix == ".jsonl" else None
    except json.JSONDecodeError:
        head = None
    if isinstance(head, dict) and all(k in head for k in RECORD_KEYS):  # a workflow prompt set
        records = read_prompt_set(path)
        return records, records[0]["task"], int(read_manifest(path)["target_tokens"])
    records = _user_records(path, tokenizer)
    return records, path.stem, max(r["n_tokens"] for r in records)


def _load_tokenizer(name: str | None, model: str, revision: str | None) -> Any:
    """A shipped tokenizer name or tokenizer.json path, else the model's own tokenizer (pad set)."""
    if name is not None:
        from reprflow.prompts import load_tokenizer

        return load_tokenizer(name)
    from transformers import AutoTokenizer

    from reprflow.config import shipped_tokenizers
    from reprflow.errors import ModelNotFoundError

    fix = (
        f"pass --tokenizer with a shipped name ({', '.join(shipped_tokenizers())}) or the path of a tokenizer.json "
        "or of a folder holding one"
    )
    from reprflow.models.registry import _from_hub, _looks_like_path

    try:
        if Path(model).expanduser().exists() or _looks_like_path(model):
            tok = AutoTokenizer.from_pretrained(model, revision=revision)
        else:  # a hub id: the local cache, then the hub only if it answers (offline: one clear error at once)
            tok = _from_hub(AutoTokenizer.from_pretrained, model, revision=revision, origin="MODEL")
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelNotFoundError(f"MODEL {model!r}: no tokenizer could be loaded from it ({first}); {fix}") from None
    if not tok("The quick brown fox")["input_ids"]:  # transformers builds an empty one from a folder without files
        raise ModelNotFoundError(f"MODEL {model!r}: no tokenizer could be loaded from it (no tokenizer files); {fix}")
    if tok.pad_token_id is None:  # right padding needs a pad id; the extractor masks it out
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def _check_writable_dir(path: Path, option: str) -> None:
    """Create ``path`` if missing and check that a file can be written in it, before any long work."""
    from reprflow.errors import ConfigError

    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {str(path)!r} is a file, not a folder")
    path.mkdir(parents=True, exist_ok=True)  # an OSError names the path
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {str(path)!r}: no permission to write in this folder")


# --------------------------------------------------------------------------- commands


def cmd_extract(args: argparse.Namespace) -> int:
    """Prompts + model -> activation store."""
    from reprflow.devices import resolve_device
    from reprflow.extract import extract_activations
    from reprflow.models import InitSpec, load_model
    from reprflow.models.registry import model_max_context, model_provenance
    from reprflow.pipeline.extract_stage import compute_dtype_for
    from reprflow.prompts.files import sha256_file
    from reprflow.store import open_store, refuse_foreign_target

    refuse_foreign_target(Path(args.out))  # before the model load, not after it
    if args.stream_metrics is not None:
        _check_writable_dir(Path(args.stream_metrics), "--stream-metrics")
    device = resolve_device(args.device, key="--device")
    auto = "bfloat16" if device.type == "cuda" else "float32"  # --dtype auto: no "bfloat16 on cpu" notice
    dtype = compute_dtype_for(auto if args.dtype == "auto" else args.dtype, device)
    if args.quiet:  # -q: transformers' own "Loading weights" bar too
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    tokenizer = _load_tokenizer(args.tokenizer, args.model, args.revision)
    prompt_path = Path(args.prompts)
    records, task, length = _read_prompts(prompt_path, tokenizer)
    spec = InitSpec(scheme=args.init, where="--init")
    net = load_model(
        args.model,
        init=spec,
        seed=args.seed,
        revision=args.revision,
        dtype=dtype,
        device=device,
        origin="MODEL",
        tokenizer_size=len(tokenizer),
    )
    attrs = {
        "model": Path(args.model).name if Path(args.model).is_dir() else args.model.replace("/", "__"),
        "model_id": args.model,
        "revision": args.revision,
        "model_source": model_provenance(net),
        "family": net.config.model_type,
        "init": {"name": args.init, "scheme": spec.scheme, "params": spec.params, "seed": args.seed},
        "dtype": str(dtype).replace("torch.", ""),
        "task": task,
        "length": length,
        "tokenizer": args.tokenizer or args.model,
        "prompt_file": str(prompt_path.resolve()),
        "prompt_sha256": sha256_file(prompt_path),
    }
    kwargs = dict(
        batch_size=args.batch_size,
        attrs=attrs,
        store_dtype=args.store_dtype,
        device=device,
        compute_dtype=dtype,
        max_context=model_max_context(net),
        progress=not args.quiet,
    )
    if args.stream_metrics is None:
        extract_activations(net, tokenizer, records, args.out, n_token_prompts=args.token_prompts, **kwargs)
    else:  # token states never reach the disk: their metrics are computed during the forward passes
        from reprflow.pipeline.token_stream import extract_with_streamed_token_metrics

        extract_with_streamed_token_metrics(
            net,
            tokenizer,
            records,
            args.out,
            args.stream_metrics,
            n_token_prompts=args.token_prompts,
            n_bins=args.bins,
            debiased_cka=not args.no_debiased_cka,
            **kwargs,
        )
    group = open_store(args.out)
    print(
        f"{args.out}: {len(records)} prompts, {len(group.attrs['state_names'])} states x "
        f"{group['last'].shape[-1]} features ({group.attrs['store_dtype']}), "
        f"token states of {len(group.attrs['token_prompt_ids'])} prompts"
    )
    if args.stream_metrics is not None:
        print(f"{args.stream_metrics}: token metrics of {min(args.token_prompts, len(records))} prompts (streamed)")
    return 0


def _store_input(args: argparse.Namespace) -> str | list[str]:
    """The STORE arguments as the stages take them: one path, or the list of a store's shards."""
    return args.stores if len(args.stores) > 1 else args.stores[0]


def cmd_metrics(args: argparse.Namespace) -> int:
    """Store (or its shards) -> token metrics files."""
    from reprflow.pipeline.token_metrics import compute_token_metrics

    written = compute_token_metrics(
        _store_input(args),
        args.out,
        views=tuple(args.views),
        debiased_cka=not args.no_debiased_cka,
        device=args.device,
        n_bins=args.bins,
        progress=not args.quiet,
    )
    for path in sorted(map(str, written.values())):
        print(path)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    """Store (or its shards) -> per-layer probe accuracies (CSV + JSON summary)."""
    from reprflow.pipeline.probe_stage import run_probe_stage

    out = Path(args.out)
    run_probe_stage(
        _store_input(args),
        out,
        views=tuple(args.views),
        epochs=args.epochs,
        lr=args.lr,
        seeds=tuple(args.seeds),
        val_fraction=args.val_fraction,
        n_train=args.n_train,
        device=args.device,
        matmul_precision=args.matmul_precision,
        prompt_path=args.prompts,
        standardize=not args.no_standardize,
    )
    summary = json.loads(out.with_suffix(".json").read_text())
    for view in args.views:
        s = summary[view]
        print(
            f"{view}: peak {s['peak_accuracy']:.3f} at {s['peak_state']}, last {s['last_accuracy']:.3f} "
            f"({s['n_train']} train / {s['n_val']} val)"
        )
    print(f"{out} and {out.with_suffix('.json')}")
    return 0


# ----------------------------------------------------------------------------- parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Wraps each one-line paragraph to the terminal; keeps multi-line ones (examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            para if "\n" in para else textwrap.fill(para, width, initial_indent=indent, subsequent_indent=indent)
            for para in text.split("\n\n")
        )


def _checked(convert: Callable[[str], Any], ok: Callable[[Any], bool], wanted: str) -> Any:
    """An argparse ``type``: ``convert(text)``, refused unless ``ok(value)``; argparse names the
    option in its error, ``expected <wanted>`` (exit 2)."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value

    return parse


def _int_at_least(low: int, below: int | None = None) -> Any:
    """An int >= ``low`` (and < ``below`` if given), as an argparse ``type``."""
    wanted = f"an int >= {low}" if below is None else f"an int in [{low}, {below})"
    return _checked(int, lambda v: v >= low and (below is None or v < below), wanted)


_SEED = _int_at_least(0, below=2**32)  # what numpy's and torch's generators take whole


def _float_between(low: float, high: float | None = None) -> Any:
    """A float > ``low`` (and < ``high`` if given; NaN never), as an argparse ``type``."""
    wanted = f"a number > {low:g}" if high is None else f"a number in ({low:g}, {high:g})"
    return _checked(float, lambda v: v > low and (high is None or v < high), wanted)


def _add_store_inputs(p: argparse.ArgumentParser, out_help: str) -> None:
    """STORE..., -o/--out and --views: the inputs and output of the commands that read a store."""
    p.add_argument("stores", nargs="+", metavar="STORE", help="a complete store, or the shards of one prompt set")
    p.add_argument("-o", "--out", required=True, help=out_help)
    p.add_argument("--views", nargs="+", default=["hf", "residual"], help="layer views (default: hf residual)")


def _add_device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument(
        "--device",
        default=default,
        help=f"auto (CUDA when present, else CPU), cpu, cuda or cuda:N (default: {default})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``reprflow`` argument parser: one subparser per command."""
    from reprflow import __version__
    from reprflow.config import shipped_tokenizers  # torch-free

    fmt = _Formatter
    parser = argparse.ArgumentParser(
        prog="reprflow",
        formatter_class=fmt,
        epilog=_EXAMPLES,
        description="Contextual representation flow in Transformers and SSMs (Hoang et al. 2025): capture the "
        "states of every layer, then measure token-level metrics and train per-layer probes.",
    )
    parser.add_argument("--version", action="version", version=f"reprflow {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ex = sub.add_parser(
        "extract",
        formatter_class=fmt,
        help="run prompts through a model and store its states (Zarr)",
        description="Run every prompt through a Hugging Face causal LM and store, per layer, the last-token state "
        "of every prompt and the full token states of --token-prompts of them.\n\n"
        "PROMPTS is a workflow prompt set (.jsonl with its .manifest.json), a JSONL file of "
        '{"prompt": str, "label": int} records (label optional, -1 when absent), or a text file '
        "with one prompt per line.",
        epilog="The store is written atomically and resumes after an interruption; see reprflow.store.",
    )
    ex.add_argument("prompts", metavar="PROMPTS", help="prompt file (.jsonl or text)")
    ex.add_argument("model", metavar="MODEL", help="hub id or local save_pretrained folder")
    ex.add_argument("-o", "--out", required=True, help="store to write (a .zarr folder)")
    ex.add_argument(
        "--tokenizer",
        default=None,
        help=f"shipped tokenizer ({', '.join(shipped_tokenizers())}) or a tokenizer.json path; default: MODEL's own",
    )
    ex.add_argument("--revision", default=None, help="hub branch, tag or commit of MODEL")
    ex.add_argument(
        "--init",
        default="pretrained",
        help="pretrained (default) or a random init scheme: default, gaussian, xavier, he",
    )
    ex.add_argument("--seed", type=_SEED, default=0, help="seed of a random init, < 2^32 (default: 0)")
    ex.add_argument("--batch-size", type=_int_at_least(1), default=8, help="prompts per forward pass (default: 8)")
    ex.add_argument(
        "--token-prompts",
        type=_int_at_least(0),
        default=64,
        help="prompts whose full token states are stored, evenly spaced; `metrics` reads them "
        "(default: 64; 0 stores last-token states only)",
    )
    ex.add_argument(
        "--stream-metrics",
        default=None,
        metavar="DIR",
        help="compute the token metrics of the --token-prompts prompts during extraction and write "
        "them to DIR (the files of `metrics`); the store then keeps no token states",
    )
    ex.add_argument(
        "--bins", type=_int_at_least(1), default=64, help="with --stream-metrics: as for `metrics` (default: 64)"
    )
    ex.add_argument(
        "--no-debiased-cka",
        action="store_true",
        help="with --stream-metrics: as for `metrics` (debiased CKA needs >= 4 tokens per token prompt)",
    )
    ex.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="compute dtype; auto = bfloat16 on CUDA, float32 elsewhere (bfloat16 is only "
        "used on CUDA) (default: auto)",
    )
    ex.add_argument(
        "--store-dtype",
        default="auto",
        choices=("auto", "float16", "float32"),
        help="on-disk dtype; auto = float16 where it cannot overflow (default: auto)",
    )
    _add_device(ex)
    ex.set_defaults(func=cmd_extract)

    me = sub.add_parser(
        "metrics",
        formatter_class=fmt,
        help="token-level metrics of a store (cosines, CKA, Sm/St)",
        description="From the token states of a store: layerwise cosine per token, inter-token cosine per "
        "layer, the CKA layer x layer matrix (biased and debiased) and the smoothness Sm/St, "
        "per layer view. Writes CSV, NPY and a JSON summary to OUT.",
    )
    _add_store_inputs(me, "output folder (created if missing)")
    me.add_argument("--no-debiased-cka", action="store_true", help="skip the debiased CKA matrix")
    me.add_argument(
        "--bins",
        type=_int_at_least(1),
        default=64,
        help="relative-position bins of the layerwise-cosine heatmap, at most the shortest "
        "prompt's token count (default: 64)",
    )
    _add_device(me, "cpu")
    me.set_defaults(func=cmd_metrics)

    pr = sub.add_parser(
        "probe",
        formatter_class=fmt,
        help="per-layer linear probes on a store's last-token states",
        description="Train one linear softmax probe per layer and seed on the last-token states to predict the "
        "label (the gold position), Adam, full batch, on a label-stratified split (MDQA: grouped by "
        "question and gold passage). Writes one CSV row per (view, state, seed) and a JSON summary beside it.",
    )
    _add_store_inputs(pr, "CSV to write; the summary goes to the same name .json")
    pr.add_argument("--epochs", type=_int_at_least(1), default=150, help="full-batch Adam steps (default: 150)")
    pr.add_argument("--lr", type=_float_between(0), default=0.05, help="Adam learning rate (default: 0.05)")
    pr.add_argument(
        "--seeds", type=_SEED, nargs="+", default=[0, 1, 2, 3, 4], help="split/init seeds, < 2^32 (default: 0-4)"
    )
    pr.add_argument(
        "--val-fraction", type=_float_between(0, 1), default=0.2, help="held-out share, in (0, 1) (default: 0.2)"
    )
    pr.add_argument(
        "--n-train", type=_int_at_least(1), default=20000, help="at most this many training samples (default: 20000)"
    )
    pr.add_argument("--no-standardize", action="store_true", help="train on raw features (default: z-scored)")
    pr.add_argument(
        "--matmul-precision",
        default="auto",
        choices=("auto", "float32", "tf32"),
        help="precision of the float32 products; auto = TF32 on CUDA (default: auto)",
    )
    pr.add_argument("--prompts", default=None, help="MDQA: the prompt file (default: the store's prompt_file)")
    _add_device(pr)
    pr.set_defaults(func=cmd_probe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reprflow`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from reprflow.errors import ReprflowError

    try:
        return args.func(args)
    except (ReprflowError, OSError) as exc:  # OSError: the file system refused a path (it names it)
        print(f"reprflow {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
