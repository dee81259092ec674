"""MongoDB access through PyMongo's async API (`AsyncMongoClient`; Motor is end-of-life).

Each service owns one database (ARCHITECTURE.md "Services own their data"). Code written against this
factory must run on MongoDB and on FerretDB alike: single-document conditional updates and upserts only,
no multi-document transactions, no change streams.
"""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from proxymage_shared.settings import ServiceSettings

Document = dict[str, Any]


def create_mongo_client(url: str, *, timeout_ms: int = 5000, app_name: str = "proxymage") -> AsyncMongoClient[Document]:
    """A client that fails fast: a dependency that is down must surface as an error, not a hang."""
    return AsyncMongoClient(
        url,
        appname=app_name,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 4, 20_000),
        tz_aware=True,
        retryWrites=True,
    )


def service_database(settings: ServiceSettings) -> tuple[AsyncMongoClient[Document], AsyncDatabase[Document]]:
    client = create_mongo_client(settings.mongo_url.get_secret_value(), app_name=settings.service_name)
    return client, client[settings.database_name()]


async def ping(client: AsyncMongoClient[Document]) -> bool:
    """True when the server answers a `ping` (readiness)."""
    try:
        await client.admin.command("ping")
    except Exception:
        return False
    return True
