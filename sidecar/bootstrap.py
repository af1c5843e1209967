"""Wire the adapters once: WordPress reader, store, REST client, clock. Web and worker both start here."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from sidecar.clock import Clock
from sidecar.config import Settings, with_password
from sidecar.domain.access import AccessPolicy
from sidecar.memberlux.reader import MemberLuxReader
from sidecar.memberlux.rest import MemberLuxRestClient
from sidecar.memberlux.traces import TraceReader
from sidecar.memberlux.schema import SiteSchema, connect_wordpress, reflect_site
from sidecar.store import db as store_db

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    wp_engine: sa.Engine
    site: SiteSchema
    reader: MemberLuxReader
    store_engine: sa.Engine
    sessions: sessionmaker[Session]
    access_policy: AccessPolicy
    notices: list[str] = field(default_factory=list)

    def rest_client(self) -> MemberLuxRestClient:
        ml = self.settings.memberlux
        return MemberLuxRestClient(ml.rest_base_url, ml.rest_user,
                                   ml.rest_password.reveal() if ml.rest_password else None,
                                   timeout=ml.timeout_seconds, verify_tls=ml.verify_tls)

    def trace_reader(self) -> TraceReader:
        """Look-ups of an order call's traces; ``posts.post_date`` is in WordPress's own zone."""
        return TraceReader(self.wp_engine, self.site, self.reader.site_timezone().tz)

    def close(self) -> None:
        self.wp_engine.dispose()
        self.store_engine.dispose()


def wordpress_url(settings: Settings) -> str:
    return with_password(settings.wordpress.db_url, settings.wordpress.db_password)


def store_url(settings: Settings) -> str:
    return with_password(settings.store.url, settings.store.password)


def build_runtime(settings: Settings, *, clock: Clock | None = None, require_current_store: bool = True) -> Runtime:
    """Connect, reflect and check. Raises the adapters' own errors with messages fit for the operator."""
    wp = settings.wordpress
    wp_engine = connect_wordpress(wordpress_url(settings), connect_timeout=wp.connect_timeout_seconds)
    site = reflect_site(wp_engine, wp.table_prefix, wp.base_prefix or None)
    log.info("reflected %d WordPress tables in %.3f s", len(site.tables), site.reflected_in_seconds)
    for notice in site.notices:
        log.warning("%s", notice)

    store_engine = store_db.create_store_engine(store_url(settings))
    store_db.guard_separate(settings.store.url, wp.db_url, store_engine, wp.table_prefix)
    if require_current_store and not store_db.is_current(store_engine):
        raise store_db.StoreError(
            f"store schema is at revision {store_db.current_revision(store_engine) or 'none'}, "
            f"code expects {store_db.head_revision()}: run `mlsidecar db upgrade`")
    return Runtime(
        settings=settings,
        clock=clock or Clock(),
        wp_engine=wp_engine,
        site=site,
        reader=MemberLuxReader(wp_engine, site),
        store_engine=store_engine,
        sessions=store_db.session_factory(store_engine),
        access_policy=AccessPolicy(include_basket=wp.include_basket_keys),
        notices=list(site.notices),
    )
