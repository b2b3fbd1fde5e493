"""Sandbox part of the local tenant sync: a seeded main WhatsApp database and three tenants.

The main database is the application's (Prisma) database in production, so the project
owns none of its tables: the sandbox creates ``contacts``, ``contacts_sectors`` and
``chats`` itself (in the ``whatsapp`` role's schema) and seeds them deterministically:

- ``exatron``: the big tenant (20,000 contacts, their sector links and chats);
- ``vidracaria``: a tenant whose ``wpp_chats`` has the older shape (AUTO_INCREMENT id +
  ``original_id``), with rows a previous tool already copied;
- ``padaria``: names with emoji and accents; its database is latin1 when the tenants live
  on MySQL (``LOCAL_SYNC_SANDBOX_MYSQL_URL``), so the charset adaptation shows;
- ``loja nova``: an instance whose name cannot be a database name, which the tenant sensor
  reports instead of adding.

Tenants live as schemas ``tenant_<instance>`` of the sandbox PostgreSQL, or as MySQL
databases ``sandbox_tenant_<instance>`` when ``LOCAL_SYNC_SANDBOX_MYSQL_URL`` is set.
Tests import the table and seeding helpers from here.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..lib.db import TENANT_TEMPLATE_VAR, Database, database_for_role, normalize_url
from ..lib.upsert import bulk_upsert
from ..local_sync.tenants import TenantDirectory
from .simulators import SandboxPart

SANDBOX_MYSQL_VAR = "LOCAL_SYNC_SANDBOX_MYSQL_URL"
PARTITIONS_NAME = "local_sync_tenants"
LATIN1_TENANT = "padaria"
LEGACY_TENANT = "vidracaria"
BIG_TENANT = "exatron"
TENANTS = {BIG_TENANT: 20_000, LEGACY_TENANT: 2_000, LATIN1_TENANT: 1_500}
UNUSABLE_INSTANCE = ("loja nova", 40)  # a name that cannot become a database name

SOURCE_DDL = {
    "postgresql": [
        """CREATE TABLE IF NOT EXISTS contacts (
            id integer PRIMARY KEY, instance varchar(191) NOT NULL, name varchar(191) NOT NULL,
            phone varchar(191) NOT NULL, customer_id integer NULL,
            is_deleted boolean NOT NULL DEFAULT false,
            created_at timestamp(3) NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
            updated_at timestamp(3) NULL, UNIQUE (instance, phone))""",
        """CREATE TABLE IF NOT EXISTS contacts_sectors (
            "contactId" integer NOT NULL, "sectorId" integer NOT NULL,
            PRIMARY KEY ("contactId", "sectorId"))""",
        """CREATE TABLE IF NOT EXISTS chats (
            id integer PRIMARY KEY, instance varchar(191) NOT NULL, type varchar(20) NOT NULL,
            avatar_url text NULL, user_id integer NULL, contact_id integer NULL,
            sector_id integer NULL, started_at timestamp(3) NULL, finished_at timestamp(3) NULL,
            finished_by integer NULL, result_id integer NULL,
            is_finished boolean NOT NULL DEFAULT false, is_schedule boolean NOT NULL DEFAULT false)""",
    ],
    "mysql": [
        """CREATE TABLE IF NOT EXISTS contacts (
            id INT PRIMARY KEY, instance VARCHAR(191) NOT NULL, name VARCHAR(191) NOT NULL,
            phone VARCHAR(191) NOT NULL, customer_id INT NULL,
            is_deleted TINYINT(1) NOT NULL DEFAULT 0,
            created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
            updated_at DATETIME(3) NULL, UNIQUE KEY (instance, phone))
            DEFAULT CHARSET=utf8mb4""",
        """CREATE TABLE IF NOT EXISTS contacts_sectors (
            `contactId` INT NOT NULL, `sectorId` INT NOT NULL, PRIMARY KEY (`contactId`, `sectorId`))""",
        """CREATE TABLE IF NOT EXISTS chats (
            id INT PRIMARY KEY, instance VARCHAR(191) NOT NULL, type VARCHAR(20) NOT NULL,
            avatar_url TEXT NULL, user_id INT NULL, contact_id INT NULL, sector_id INT NULL,
            started_at DATETIME(3) NULL, finished_at DATETIME(3) NULL, finished_by INT NULL,
            result_id INT NULL, is_finished TINYINT(1) NOT NULL DEFAULT 0,
            is_schedule TINYINT(1) NOT NULL DEFAULT 0) DEFAULT CHARSET=utf8mb4""",
    ],
}

LEGACY_CHATS_DDL = {
    "postgresql": """CREATE TABLE IF NOT EXISTS wpp_chats (
        id serial PRIMARY KEY, original_id integer NULL, instance varchar(255) NOT NULL,
        type varchar(50) NOT NULL, avatar_url text NULL, user_id integer NULL,
        contact_id integer NULL, sector_id integer NULL, started_at timestamp NULL,
        finished_at timestamp NULL, finished_by integer NULL, result_id integer NULL,
        is_finished smallint NOT NULL DEFAULT 0, is_schedule smallint NOT NULL DEFAULT 0)""",
    "mysql": """CREATE TABLE IF NOT EXISTS wpp_chats (
        id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, original_id INT NULL,
        instance VARCHAR(255) NOT NULL, type VARCHAR(50) NOT NULL, avatar_url TEXT NULL,
        user_id INT NULL, contact_id INT NULL, sector_id INT NULL, started_at DATETIME NULL,
        finished_at DATETIME NULL, finished_by INT NULL, result_id INT NULL,
        is_finished TINYINT(1) NOT NULL DEFAULT 0, is_schedule TINYINT(1) NOT NULL DEFAULT 0)
        ENGINE=InnoDB""",
}


def create_source_tables(db: Database) -> None:
    """The main database's three tables, as Prisma creates them (sandbox and tests only)."""
    dialect = "postgresql" if db.is_postgres else "mysql"
    with db.begin() as conn:
        if db.is_postgres and db.schema:  # else search_path would put them in public
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"')
        for ddl in SOURCE_DDL[dialect]:
            conn.exec_driver_sql(ddl)


def add_chats_updated_at(db: Database) -> None:
    """The main database's ``chats`` with Prisma's ``@updatedAt`` column, which newer schemas
    of the service carry (the contract's shape has none): the sync then reads chats by it."""
    kind = "timestamp(3)" if db.is_postgres else "DATETIME(3)"
    with db.begin() as conn:
        if not any(c["name"] == "updated_at" for c in sa.inspect(conn).get_columns("chats")):
            conn.exec_driver_sql(f"ALTER TABLE chats ADD COLUMN updated_at {kind} NULL")


def create_legacy_chats_table(db: Database) -> None:
    """A tenant's older wpp_chats: AUTO_INCREMENT id, the main id kept in original_id."""
    with db.begin() as conn:
        conn.exec_driver_sql(LEGACY_CHATS_DDL["postgresql" if db.is_postgres else "mysql"])


@dataclass
class SourceData:
    contacts: list[dict] = field(default_factory=list)
    links: list[dict] = field(default_factory=list)
    chats: list[dict] = field(default_factory=list)


FIRST_NAMES = [
    "Ana", "João", "Maria", "José", "Conceição", "Luís", "Fernanda", "Paulo", "Márcia",
    "Antônio", "Beatriz", "Gonçalo", "Lúcia", "Raimundo", "Patrícia", "Sérgio", "Cláudia",
]  # fmt: skip
LAST_NAMES = [
    "Silva", "Santos", "Oliveira", "Souza", "Lima", "Araújo", "Gonçalves", "Conceição",
    "Ribeiro", "Carvalho", "Gomes", "Martins", "Rocha", "Almeida", "Nascimento",
]  # fmt: skip
EMOJI = ["🌸", "😀", "⭐", "🍞", "🙏"]
EPOCH = dt.datetime(2023, 1, 1)  # naive UTC, like Prisma's DateTime columns


def generate_instance(
    instance: str,
    contacts: int,
    *,
    first_contact_id: int,
    first_chat_id: int,
    seed: int,
    emoji_share: float = 0.0,
) -> SourceData:
    """Deterministic, realistic rows of one instance: contacts (about 3% soft-deleted), 0-3
    sector links each, about one chat per contact (10% still open)."""
    rng = random.Random(f"{seed}:{instance}")
    data = SourceData()
    chat_id = first_chat_id
    for n in range(contacts):
        cid = first_contact_id + n
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        if rng.random() < emoji_share:
            name += f" {rng.choice(EMOJI)}"
        created = EPOCH + dt.timedelta(minutes=rng.randrange(0, 60 * 24 * 600))
        deleted = rng.random() < 0.03
        data.contacts.append(
            {
                "id": cid,
                "instance": instance,
                "name": name,
                "phone": f"55{rng.choice((11, 21, 41, 47, 48, 51))}9{cid:08d}",
                "customer_id": None if deleted or rng.random() < 0.4 else rng.randrange(1, 10**6),
                "is_deleted": deleted,
                "created_at": created,
                "updated_at": created + dt.timedelta(days=rng.randrange(0, 90))
                if rng.random() < 0.5
                else None,
            }
        )
        for sector in rng.sample(range(1, 9), rng.randrange(0, 4)):
            data.links.append({"contactId": cid, "sectorId": sector})
        for _ in range(rng.choice((0, 1, 1, 2))):
            started = created + dt.timedelta(hours=rng.randrange(0, 24 * 60))
            finished = rng.random() > 0.1
            data.chats.append(
                {
                    "id": chat_id,
                    "instance": instance,
                    "type": rng.choice(("RECEPTIVE", "ACTIVE")),
                    "avatar_url": f"https://cdn.example.com/a/{cid}.jpg"
                    if rng.random() < 0.3
                    else None,
                    "user_id": rng.randrange(1, 40),
                    "contact_id": cid,
                    "sector_id": rng.randrange(1, 9),
                    "started_at": started,
                    "finished_at": started + dt.timedelta(minutes=rng.randrange(1, 600))
                    if finished
                    else None,
                    "finished_by": rng.randrange(1, 40) if finished else None,
                    "result_id": rng.randrange(1, 6) if finished else None,
                    "is_finished": finished,
                    "is_schedule": rng.random() < 0.05,
                }
            )
            chat_id += 1
    return data


def write_source(db: Database, data: SourceData) -> None:
    """Upsert rows into the main database's tables (idempotent)."""
    with db.begin() as conn:
        bulk_upsert(conn, "contacts", data.contacts, ["id"])
        bulk_upsert(conn, "contacts_sectors", data.links, ["contactId", "sectorId"])
        bulk_upsert(conn, "chats", data.chats, ["id"])


def sandbox_source(seed: int = 7) -> SourceData:
    """Every sandbox instance's rows, ids unique across instances like the main database's."""
    everything = SourceData()
    contact_id, chat_id = 1, 1
    for instance, count in [*TENANTS.items(), UNUSABLE_INSTANCE]:
        part = generate_instance(
            instance,
            count,
            first_contact_id=contact_id,
            first_chat_id=chat_id,
            seed=seed,
            emoji_share=0.05 if instance == LATIN1_TENANT else 0.002,
        )
        everything.contacts += part.contacts
        everything.links += part.links
        everything.chats += part.chats
        contact_id += count
        chat_id += len(part.chats)
    return everything


# --- tenants ------------------------------------------------------------------------------


def tenant_template(env: Mapping[str, str]) -> str | None:
    """Tenants as MySQL databases (when a sandbox MySQL is given) or schemas of the sandbox PG."""
    mysql = env.get(SANDBOX_MYSQL_VAR, "").strip()
    if mysql:
        base = normalize_url(mysql).set(database="sandbox_tenant_{instance}")
        return base.render_as_string(hide_password=False).replace("%7B", "{").replace("%7D", "}")
    shared = env.get("SYNC_DATABASE_URL", "").strip()
    if not shared:
        return None
    return shared + ("&" if "?" in shared else "?") + "schema=tenant_{instance}"


def _create_tenant_home(directory: TenantDirectory, instance: str) -> Database:
    """The tenant's empty database (MySQL, with its charset) or schema (PostgreSQL)."""
    tgt = directory.target(instance)
    if tgt.url.drivername.startswith("mysql"):
        charset = "latin1" if instance == LATIN1_TENANT else "utf8mb4"
        server = sa.create_engine(tgt.url._replace(database=None), poolclass=sa.pool.NullPool)
        with server.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE DATABASE IF NOT EXISTS `{tgt.url.database}` CHARACTER SET {charset}"
            )
        server.dispose()
    db = tgt.open()
    if db.is_postgres:
        with db.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{tgt.schema}"')
    return db


def _seed_legacy_tenant(db: Database, data: SourceData) -> None:
    """The older wpp_chats with the first chats already copied by a previous tool."""
    create_legacy_chats_table(db)
    with db.begin() as conn:
        if conn.execute(sa.text("SELECT COUNT(*) FROM wpp_chats")).scalar():
            return
        old = [c for c in data.chats if c["instance"] == LEGACY_TENANT][:200]
        conn.execute(
            sa.text(
                "INSERT INTO wpp_chats (original_id, instance, type, contact_id, is_finished)"
                " VALUES (:id, :instance, :type, :contact_id, 0)"
            ),
            [{k: c[k] for k in ("id", "instance", "type", "contact_id")} for c in old],
        )


def prepare(env: Mapping[str, str]) -> None:
    template = env.get(TENANT_TEMPLATE_VAR) or tenant_template(env)
    main = database_for_role("whatsapp", env)
    try:
        create_source_tables(main)
        data = sandbox_source()
        with main.connect() as conn:
            present = conn.execute(sa.text("SELECT COUNT(*) FROM contacts")).scalar()
        if present != len(data.contacts):
            write_source(main, data)
    finally:
        main.dispose()
    directory = TenantDirectory(template=template)
    for instance in TENANTS:
        db = _create_tenant_home(directory, instance)
        try:
            if instance == LEGACY_TENANT:
                _seed_legacy_tenant(db, data)
        finally:
            db.dispose()


def env_from_sandbox(sandbox_env: Mapping[str, str]) -> dict[str, str]:
    """Tenant URLs live on the sandbox's database, known only once it is up."""
    settings = {"LOCAL_SYNC_TIMEZONE": "America/Sao_Paulo"}
    template = tenant_template({**os.environ, **sandbox_env})
    if template:
        settings[TENANT_TEMPLATE_VAR] = template
    return settings


def dynamic_partitions(env: Mapping[str, str]) -> dict[str, list[str]]:
    return {PARTITIONS_NAME: sorted(TENANTS)}


LOCAL_SYNC_PART = SandboxPart(
    name="local_sync",
    env_from_sandbox=env_from_sandbox,
    prepare=prepare,
    dynamic_partitions=dynamic_partitions,
    demo_partitions=lambda: {
        f"local_sync/{table}": sorted(TENANTS)
        for table in ("wpp_contacts", "wpp_contact_sectors", "wpp_chats")
    },
)
