"""Project commands: ``kedro run`` (Kedro's, with readable configuration errors),
``kedro config show | diff | check | explain``, ``kedro opensora probe-batch-sizes | convert``."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import yaml
from kedro.framework.cli.project import run as kedro_run
from kedro.framework.cli.utils import _split_params
from kedro.framework.project import pipelines, settings

from opensora_kedro.config.describe import diff_trees, explain_key, plain
from opensora_kedro.config.errors import UserConfigError
from opensora_kedro.config.loader import ProjectConfigLoader
from opensora_kedro.config.resolve import ResolvedParameters
from opensora_kedro.config.schemas.diffusion import DiffusionStageParams

ENV = click.option(
    "--env", "-e", default=None, help="Kedro env layered over base (default: local)."
)
PARAMS = click.option(
    "--params", default="", callback=_split_params, help="Overrides, as for kedro run: a.b=1,c=x."
)


TRACEBACK_ENV = "OPENSORA_KEDRO_TRACEBACK"


def user_error(error: BaseException | None) -> UserConfigError | None:
    """The configuration error behind ``error`` (itself, or a cause or context of it)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserConfigError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@contextmanager
def readable_errors(verbose: bool = False) -> Iterator[None]:
    """Print a configuration error as its message list, without a traceback, and exit 1;
    ``--verbose`` or ``OPENSORA_KEDRO_TRACEBACK=1`` keeps the full traceback."""
    try:
        yield
    except Exception as error:
        found = user_error(error)
        if found is None or verbose or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        click.secho(str(found), fg="red", err=True)
        click.secho(
            f"(full traceback: --verbose or {TRACEBACK_ENV}=1)", fg="bright_black", err=True
        )
        sys.exit(1)


def _run(verbose: bool, **kwargs) -> None:
    with readable_errors(verbose):
        kedro_run.callback(**kwargs)


run = click.Command(
    name="run",
    callback=_run,
    params=[
        *kedro_run.params,
        click.Option(["--verbose", "-v"], is_flag=True, help="Show tracebacks of config errors."),
    ],
    help=kedro_run.help,
    short_help=kedro_run.short_help,
)


def _loader(env: str | None, params: dict | None = None) -> ProjectConfigLoader:
    conf_source = Path.cwd() / settings.CONF_SOURCE
    return ProjectConfigLoader(
        conf_source=str(conf_source),
        env=env,
        runtime_params=params or {},
        **settings.CONFIG_LOADER_ARGS,
    )


def _resolve(env: str | None, params: dict | None = None) -> ResolvedParameters:
    # The output shows every resolved value; log lines would only corrupt piped YAML.
    logging.getLogger("opensora_kedro.config").setLevel(logging.WARNING)
    with readable_errors():
        return _loader(env, params).resolved_parameters()


def _groups_of(name: str, params: dict) -> list[str]:
    """Parameter groups a pipeline's nodes read (or the group itself, given a group name)."""
    groups = {name} & set(params)
    if name in pipelines:
        for dataset in pipelines[name].inputs():
            if dataset.startswith("params:"):
                groups.add(dataset.removeprefix("params:").split(".")[0])
    if not groups:
        raise click.BadParameter(f"'{name}' is neither a pipeline nor a parameter group")
    return sorted(groups)


@click.group(name="opensora-kedro")
def cli() -> None:
    """Project commands."""


cli.add_command(run)


@cli.group()
def config() -> None:
    """Inspect and check the resolved parameters (envs, --params, stage inheritance)."""


@config.command()
@click.argument("name")
@ENV
@PARAMS
@click.option("--format", "output", type=click.Choice(["yaml", "json"]), default="yaml",
              show_default=True, help="Output format (on stdout; logs go to stderr).")  # fmt: skip
def show(name: str, env: str | None, params: dict, output: str) -> None:
    """Print the resolved parameters a pipeline (or parameter group) receives."""
    resolved = _resolve(env, params).params
    selected = {group: plain(resolved[group]) for group in _groups_of(name, resolved)}
    if output == "json":
        click.echo(json.dumps(selected, indent=1))
    else:
        click.echo(yaml.safe_dump(selected, sort_keys=False), nl=False)


@config.command()
@click.argument("first")
@click.argument("second")
@ENV
@PARAMS
def diff(first: str, second: str, env: str | None, params: dict) -> None:
    """Compare two groups key by key; write ENV:GROUP to take one from another env.

    \b
    kedro config diff diffusion_stage1 diffusion_stage2
    kedro config diff local:diffusion_stage2 cluster:diffusion_stage2
    """
    trees = []
    for spec in (first, second):
        group_env, _, group = spec.rpartition(":")
        resolved = _resolve(group_env or env, params).params
        if group not in resolved:
            raise click.BadParameter(f"no parameter group '{group}'")
        trees.append(resolved[group])
    lines = diff_trees(*trees)
    click.echo("\n".join(lines) if lines else "no differences")


def _catalog(loader: ProjectConfigLoader):
    """The env's data catalog, built as a run builds it (without starting a session)."""
    from kedro.config import MissingConfigException

    try:
        credentials = loader["credentials"]
    except MissingConfigException:
        credentials = {}
    return settings.DATA_CATALOG_CLASS.from_config(loader["catalog"], credentials)


def _check_env(name: str, pipeline: str | None, params: dict) -> str:
    """Check one env (raises UserConfigError); ``pipeline`` also checks what running it
    here needs: its inputs, the files its parameters name, this machine."""
    from opensora_kedro.hooks import check_before_run

    started = time.perf_counter()
    loader = _loader(name, params)
    resolved = loader.resolved_parameters()
    checked = f"{len(resolved.params)} groups"
    if pipeline is not None:
        if pipeline not in pipelines:
            raise click.BadParameter(f"no pipeline '{pipeline}'; pipelines: {', '.join(pipelines)}")
        check_before_run(loader, pipelines[pipeline], _catalog(loader), Path.cwd())
        checked += f"; inputs and machine for pipeline {pipeline}"
    return f"{name}: ok ({checked}, {time.perf_counter() - started:.2f} s)"


@config.command()
@click.option("--env", "-e", "envs", multiple=True, help="Env to check (default: every env).")
@click.option(
    "--pipeline",
    "-p",
    default="__default__",
    help="Pipeline whose inputs and machine needs are checked (default: __default__).",
)
@PARAMS
def check(envs: tuple[str, ...], pipeline: str, params: dict) -> None:
    """Validate the parameters of every env without running anything.

    For the envs given with --env (default: the default run env) also check what running
    --pipeline here needs: catalog inputs that no node produces exist, every file or folder a
    parameter names as an input exists, and the launcher fits this machine's GPUs.
    """
    conf = Path.cwd() / settings.CONF_SOURCE
    names = envs or sorted(
        p.name for p in conf.iterdir() if p.is_dir() and any(p.glob("parameters*"))
    )
    run_envs = set(envs) or {settings.CONFIG_LOADER_ARGS.get("default_run_env", "local")}
    failed = False
    for name in names:
        try:
            click.echo(_check_env(name, pipeline if name in run_envs else None, params))
        except UserConfigError as error:
            failed = True
            click.secho(f"{name}: {error}", fg="red", err=True)
    sys.exit(1 if failed else 0)


@config.command()
@click.argument("key")
@ENV
@PARAMS
def explain(key: str, env: str | None, params: dict) -> None:
    """What a parameter means, its type, default, current value and the file that set it."""
    resolved = _resolve(env, params)
    try:
        info = explain_key(key, resolved.params, resolved.sources)
    except KeyError as error:
        raise click.BadParameter(f"no parameter {error}") from None
    click.echo(f"{info.key}: {info.description}")
    click.echo(f"  type:    {info.type}")
    click.echo(f"  default: {'(required)' if info.default is None else repr(info.default)}")
    click.echo(f"  value:   {info.value!r}")
    click.echo(f"  set in:  {info.source or 'schema default'}")


@cli.group()
def opensora() -> None:
    """Project tools: the batch-size probe of this machine, Open-Sora's released files."""


def _stage_params(stage: str, env: str | None, params: dict) -> DiffusionStageParams:
    models = _resolve(env, params).models
    if not isinstance(models.get(stage), DiffusionStageParams):
        stages = ", ".join(sorted(g for g in models if g.startswith("diffusion_")))
        raise click.BadParameter(f"'{stage}' is not a diffusion stage; have {stages}")
    return models[stage]


@opensora.command("probe-batch-sizes")
@click.option("--stage", required=True, help="Diffusion stage whose bucket_config is probed.")
@ENV
@PARAMS
@click.option("--out", default=None, help="Output folder (default: <stage>.probe.output_dir).")
@click.option("--dry-run", is_flag=True, help="List the buckets and their tokens; train nothing.")
def probe_batch_sizes(
    stage: str, env: str | None, params: dict, out: str | None, dry_run: bool
) -> None:
    """Largest batch per bucket of a stage on this GPU; writes a bucket_config for an env.

    \b
    kedro opensora probe-batch-sizes --stage diffusion_stage1 --env cluster
    cp data/08_reporting/batch_probe/diffusion_stage1/parameters_*_probed.yml conf/my_gpus/
    """
    from opensora_kedro.training.batch_probe import probe_buckets
    from opensora_kedro.training.probe_trial import run_probe, stage_geometry

    logging.getLogger("opensora_kedro").setLevel(logging.INFO)
    stage_params = _stage_params(stage, env, params)
    if dry_run:
        buckets = probe_buckets(stage_params.bucket_config, stage_geometry(stage_params))
        click.echo("bucket        latent (c,t,h,w)   image tokens  tokens/sample  configured batch")
        for b in buckets:
            click.echo(f"{b.resolution + ' ' + str(b.num_frames) + 'f':<13} "
                       f"{str(b.latent_shape):<18} {b.image_tokens:>12,} {b.tokens:>14,} "
                       f"{b.configured_batch:>17}")  # fmt: skip
        return
    out_dir = Path(out or stage_params.probe.output_dir) / stage
    command = f"kedro opensora probe-batch-sizes --stage {stage}" + (f" --env {env}" if env else "")
    try:
        paths = run_probe(stage, stage_params, out_dir, [f"Written by `{command}`"])
    except RuntimeError as error:
        click.secho(str(error), fg="red", err=True)
        sys.exit(1)
    for kind, path in paths.items():
        click.echo(f"{kind}: {path}")


DTYPES = {"keep": None, "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@opensora.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.argument("destination", type=click.Path(file_okay=False))
@click.option("--rope", type=click.Choice(["rotate-half", "interleaved"]), default="rotate-half",
              show_default=True, help="RoPE convention of SOURCE: rotate-half = Open-Sora 2.0 "
              "(use_liger_rope true), interleaved = FLUX.1 as released.")  # fmt: skip
@click.option("--axes-dim", default=None, help="RoPE dims per axis, e.g. 16,56,56 (default for "
              "128-dim heads); they cannot be read from the weights.")  # fmt: skip
@click.option("--theta", default=10000, show_default=True, help="RoPE base.")
@click.option("--patch-size", type=int, default=None, help="Latent patch side (default: from "
              "cond_in, else 2).")  # fmt: skip
@click.option("--dtype", type=click.Choice(list(DTYPES)), default="keep", show_default=True,
              help="Precision of the written weights.")  # fmt: skip
def convert(
    source: str, destination: str, rope: str, axes_dim: str | None, theta: int,
    patch_size: int | None, dtype: str,
) -> None:  # fmt: skip
    """Convert an Open-Sora 2.0 / Flux-format MMDiT file (SOURCE) into this project's layout,
    as a model folder DESTINATION (model.safetensors + config.json) that from_pretrained can
    name. The structure is read from the file; every tensor must be used (strict).

    \b
    kedro opensora convert ckpts/Open_Sora_v2.safetensors data/06_models/open_sora_v2
    kedro opensora convert ckpts/flux1-dev.safetensors data/06_models/flux1_dev --rope interleaved
    """
    import torch

    from opensora_kedro.models.mmdit_convert import CheckpointMismatchError, infer_config
    from opensora_kedro.models.mmdit_loading import convert_mmdit_file
    from opensora_kedro.models.safetensors_stream import SafetensorsReader

    axes = tuple(int(v) for v in axes_dim.split(",")) if axes_dim else None
    try:
        with SafetensorsReader(source) as reader:
            shapes = {key: info.shape for key, info in reader.tensors.items()}
        config = infer_config(shapes, axes, theta, patch_size)
        target = convert_mmdit_file(
            source, destination, config, liger_rope=rope == "rotate-half",
            dtype=getattr(torch, DTYPES[dtype]) if DTYPES[dtype] else None,
        )  # fmt: skip
    except (CheckpointMismatchError, ValueError) as error:
        click.secho(f"cannot convert {source}: {error}", fg="red", err=True)
        sys.exit(1)
    summary = (f"{len(shapes)} tensors in, depth {config.depth} + {config.depth_single_blocks}, "
               f"hidden {config.hidden_size}, cond_embed {config.cond_embed}, "
               f"guidance_embed {config.guidance_embed}")  # fmt: skip
    click.echo(f"wrote {target} ({summary})")
