"""Project commands: ``kedro config show | diff | check | explain`` and
``kedro opensora convert``."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import click
import yaml
from kedro.framework.cli.utils import _split_params
from kedro.framework.project import pipelines, settings

from opensora_kedro.config.errors import ConfigError
from opensora_kedro.config.inspect import diff_trees, explain_key, plain
from opensora_kedro.config.loader import ProjectConfigLoader
from opensora_kedro.config.resolve import ResolvedParameters

ENV = click.option(
    "--env", "-e", default=None, help="Kedro env layered over base (default: local)."
)
PARAMS = click.option(
    "--params", default="", callback=_split_params, help="Overrides, as for kedro run: a.b=1,c=x."
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
    try:
        return _loader(env, params).resolved_parameters()
    except ConfigError as error:
        click.secho(str(error), fg="red", err=True)
        sys.exit(1)


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


@cli.group()
def config() -> None:
    """Inspect and check the resolved parameters (envs, --params, stage inheritance)."""


@config.command()
@click.argument("name")
@ENV
@PARAMS
def show(name: str, env: str | None, params: dict) -> None:
    """Print the resolved parameters a pipeline (or parameter group) receives."""
    resolved = _resolve(env, params).params
    selected = {group: plain(resolved[group]) for group in _groups_of(name, resolved)}
    click.echo(yaml.safe_dump(selected, sort_keys=False))


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


@config.command()
@click.option("--env", "-e", "envs", multiple=True, help="Env to check (default: every env).")
def check(envs: tuple[str, ...]) -> None:
    """Validate the parameters of every env without running anything."""
    conf = Path.cwd() / settings.CONF_SOURCE
    names = envs or sorted(
        p.name for p in conf.iterdir() if p.is_dir() and any(p.glob("parameters*"))
    )
    failed = False
    for name in names:
        started = time.perf_counter()
        try:
            resolved = _loader(name).resolved_parameters()
        except ConfigError as error:
            failed = True
            click.secho(f"{name}: {error}", fg="red", err=True)
            continue
        elapsed = time.perf_counter() - started
        click.echo(f"{name}: ok ({len(resolved.params)} groups, {elapsed:.2f} s)")
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
    """Work with Open-Sora's released files."""


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
