"""SQLAlchemy dialects for tests; importing this module registers them (in that process only).

- ``sqlitepw://user:password@//abs/path.db``: SQLite behind a URL with a user and password, so
  a study can run with credentials in its storage URL without a database server. The password
  is checked: a URL that lost it fails to connect.
- ``netdb://user:password@host:port/db``: a server database whose driver is "installed" (a stub
  DB-API module) and that is reached over TCP, for the storage checks; it never connects.
"""

import types

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL

PASSWORD = "Pa55-w0rd-never-written"


class SQLiteWithPassword(SQLiteDialect_pysqlite):
    """pysqlite, reached through a URL that names a user and password (SQLite has neither)."""

    supports_statement_cache = True

    def create_connect_args(self, url):
        if url.password != PASSWORD:
            raise ValueError(f"sqlitepw: wrong password for {url.username}")
        return super().create_connect_args(URL.create("sqlite", database=url.database,
                                                      query=url.query))


class NetDB(PGDialect):
    """PostgreSQL's dialect over a stub driver: enough for create_engine, nothing more."""

    name = "netdb"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls):
        return types.SimpleNamespace(paramstyle="pyformat", Error=Exception)


registry.register("sqlitepw", __name__, "SQLiteWithPassword")
registry.register("netdb", __name__, "NetDB")
