"""The test databases' URLs: a MariaDB test server is used without TLS unless the URL names a TLS option."""

from __future__ import annotations

from tests.databases import without_opportunistic_tls


def test_a_plain_mariadb_url_is_used_without_tls():
    assert without_opportunistic_tls("mysql+pymysql://root@127.0.0.1:3306/") == \
        "mysql+pymysql://root@127.0.0.1:3306/?ssl_disabled=true"


def test_a_url_naming_a_tls_option_is_kept():
    url = "mysql+pymysql://root@db.example:3306/?ssl_ca=/etc/ca.pem"
    assert without_opportunistic_tls(url) == url


def test_other_databases_are_kept():
    for url in ("sqlite:///x.sqlite", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"):
        assert without_opportunistic_tls(url) == url
