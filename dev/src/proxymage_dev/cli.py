"""`proxymage-dev`: the project's developer commands (synthetic PACS data, demo scenario; topics, as
`proxymage topics` does, which the service images ship). Not in the images (the proxymage-dev member).

Settings come from the environment and `PROXYMAGE_ENV_FILE` like the services' (the Makefile points it at
deploy/local/local.env).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from proxymage_shared.ops import cli as operator_cli
from proxymage_shared.settings import DicomPeer, ServiceSettings, load_settings

from proxymage_dev.scenario import publish_scenario
from proxymage_dev.seed_pacs import store_studies
from proxymage_dev.synthetic import PATIENTS, large_study, synthetic_studies

app = typer.Typer(help="Proxymage developer commands.", no_args_is_help=True)


class DevSettings(ServiceSettings):
    service_name: str = "dev"
    mirc: DicomPeer = DicomPeer(ae_title="MIRC", host="127.0.0.1", port=11112)
    dev_ae_title: str = "PM_DEV"


# The operator's `proxymage topics` (the same command, options and settings), kept here for the scripts that
# already call `proxymage-dev topics`.
app.command("topics")(operator_cli.topics)


@app.command("seed-pacs")
def seed_pacs(
    seed: Annotated[int, typer.Option(help="Same seed, same patients, studies and UIDs.")] = 42,
    large_study_instances: Annotated[
        int, typer.Option(help="Also store one CT study of this many 512x512 slices (0: none).")
    ] = 0,
) -> None:
    """Stores the synthetic patients' studies into MIRC by C-STORE."""
    settings = load_settings(DevSettings)
    studies = list(synthetic_studies(seed))
    if large_study_instances:
        studies.append(large_study(seed, large_study_instances))
    report = store_studies(studies, settings.mirc, settings.dev_ae_title)
    typer.echo(
        f"stored {report.instances} instance(s) of {report.studies} stud(ies) for {len(PATIENTS)} synthetic "
        f"patient records into {settings.mirc.ae_title} at {settings.mirc.host}:{settings.mirc.port}"
        + (f"; {report.failed} FAILED" if report.failed else "")
    )
    if report.failed:
        raise typer.Exit(1)


@app.command("demo-scenario")
def demo_scenario() -> None:
    """Publishes the demo scenario on Kafka as the DCC would (RCP, meeting with experts, three patients)."""
    settings = load_settings(DevSettings)
    events = asyncio.run(publish_scenario(settings.kafka_bootstrap_servers, settings.topic_prefix))
    for topic, key, _ in events:
        typer.echo(f"  published {topic} {key}")


def main() -> None:
    app()
