"""Project commands: ``kedro config show | diff | check | explain`` and
``kedro opensora probe-batch-sizes``."""

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
    """Project tools that measure this machine."""


def _stage_params(stage: str, env: str | None, params: dict) -> dict:
    resolved = _resolve(env, params).params
    if not stage.startswith("diffusion_") or stage not in resolved:
        stages = ", ".join(sorted(g for g in resolved if g.startswith("diffusion_")))
        raise click.BadParameter(f"'{stage}' is not a diffusion stage; have {stages}")
    return {**resolved[stage], "name": stage}


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
        buckets = probe_buckets(stage_params["bucket_config"], stage_geometry(stage_params))
        click.echo("bucket        latent (c,t,h,w)   image tokens  tokens/sample  configured batch")
        for b in buckets:
            click.echo(f"{b.resolution + ' ' + str(b.num_frames) + 'f':<13} "
                       f"{str(b.latent_shape):<18} {b.image_tokens:>12,} {b.tokens:>14,} "
                       f"{b.configured_batch:>17}")  # fmt: skip
        return
    out_dir = Path(out or stage_params["probe"]["output_dir"]) / stage
    command = f"kedro opensora probe-batch-sizes --stage {stage}" + (f" --env {env}" if env else "")
    try:
        paths = run_probe(stage, stage_params, out_dir, [f"Written by `{command}`"])
    except RuntimeError as error:
        click.secho(str(error), fg="red", err=True)
        sys.exit(1)
    for kind, path in paths.items():
        click.echo(f"{kind}: {path}")
