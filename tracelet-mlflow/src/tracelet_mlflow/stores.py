"""Whether the installed MLflow can serve a tracking URI, checked when a run starts.

``tracelet-mlflow`` depends on ``mlflow-skinny``, MLflow's client: it talks to a tracking
server (``http://``, ``https://``, ``databricks``) but cannot open a database store
(``sqlite:///...``, ``postgresql://...``, ``mysql://...``, ``mssql://...``). MLflow
registers those schemes only where SQLAlchemy can be imported, and its database store needs
Alembic too; the full ``mlflow`` (the extra ``tracelet-mlflow[local]``) brings both. MLflow
3 also refuses its file store (``./mlruns``, ``file:...``) unless ``MLFLOW_ALLOW_FILE_STORE``
is true. Without these checks such a run would retry quietly until its flush timeout; with
them, ``start_logging`` raises a ConfigurationError that says what to install or set.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from urllib.parse import urlsplit, urlunsplit

from tracelet.plugins import ConfigurationError

DATABASE_SCHEMES = ("postgresql", "mysql", "sqlite", "mssql")
"""MLflow's database engines (``mlflow.store.db.db_types.DATABASE_ENGINES``)."""
DATABASE_MODULES = ("sqlalchemy", "alembic")
"""What MLflow's database store imports beyond ``mlflow-skinny``."""
FILE_SCHEMES = ("", "file")
NAMED_STORES = ("databricks", "databricks-uc", "uc")
"""URIs that are a scheme alone, as MLflow reads them."""
LOCAL_EXTRA = "tracelet-mlflow[local]"


def resolved_tracking_uri(configured: str | None) -> str:
    """The tracking URI an ``MlflowClient`` given ``configured`` uses.

    MLflow's own answer when nothing is configured (``mlflow.set_tracking_uri``, then
    ``MLFLOW_TRACKING_URI``, then its default store): MLflow is imported only when neither
    the option nor the environment variable names a URI and it is not imported yet.
    """
    if configured:
        return configured
    if "mlflow" not in sys.modules and os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    import mlflow

    return mlflow.get_tracking_uri()


def scheme_of(uri: str) -> str:
    """The store kind of ``uri`` as MLflow picks its store: a database engine (any
    ``+driver`` dropped), ``file`` or ``""`` for a local path, else the URI's scheme
    (``databricks``, ``databricks-uc`` and ``uc`` alone name theirs)."""
    if uri in NAMED_STORES:
        return uri
    scheme = urlsplit(uri).scheme.lower()
    for engine in DATABASE_SCHEMES:
        if scheme.startswith(engine):
            return engine
    if len(scheme) == 1:  # a Windows drive letter: a local path
        return ""
    return scheme


def check_tracking_uri(configured: str | None) -> None:
    """Raise ConfigurationError when the installed MLflow cannot serve the tracking URI
    (``configured``, else MLflow's own); naming what to install or set."""
    uri = resolved_tracking_uri(configured)
    scheme = scheme_of(uri)
    shown = without_credentials(uri)
    if scheme in DATABASE_SCHEMES:
        missing = [name for name in DATABASE_MODULES if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigurationError(
                f"mlflow tracking URI {shown!r} needs MLflow's database store, which the "
                f"installed MLflow lacks (mlflow-skinny, the client alone: no module named "
                f"{missing[0]!r}); install the extra {LOCAL_EXTRA} (the full MLflow): "
                f'pip install "{LOCAL_EXTRA}"; or set tracking_uri to a tracking server '
                "(http://host:5000)"
            )
    elif scheme in FILE_SCHEMES and not _file_store_allowed(uri):
        raise ConfigurationError(
            f"mlflow tracking URI {shown!r} is MLflow's file store, which this MLflow refuses "
            "unless MLFLOW_ALLOW_FILE_STORE=true; set tracking_uri to a database "
            f"(sqlite:///mlflow.db, with {LOCAL_EXTRA}) or a tracking server "
            "(http://host:5000), or set MLFLOW_ALLOW_FILE_STORE=true"
        )


def without_credentials(uri: str) -> str:
    """``uri`` as an error message may show it: ``user:password@`` and the query (where
    database URIs can carry a password) masked as ``***``."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc and not parts.query:
        return uri
    host = parts.netloc.rpartition("@")[2]
    user = "***@" if "@" in parts.netloc else ""
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, user + host, parts.path, query, ""))


def _file_store_allowed(uri: str) -> bool:
    """Whether MLflow opens its file store: always before MLflow 3's opt-in variable
    ``MLFLOW_ALLOW_FILE_STORE``, and with it only when that variable is true (read without
    importing MLflow when it says so plainly)."""
    plain = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower()
    if plain in ("true", "1"):
        return True
    from mlflow import environment_variables

    allow = getattr(environment_variables, "MLFLOW_ALLOW_FILE_STORE", None)
    if allow is None:
        return True
    try:
        return bool(allow.get())
    except ValueError:  # a value MLflow cannot read as a boolean: it refuses the store too
        return False
