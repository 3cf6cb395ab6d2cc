"""The S3 clients' timestamp parser (usage_etl/s3.py): the same instant as botocore's own."""

from __future__ import annotations

from datetime import UTC, datetime

from botocore.utils import parse_timestamp as botocore_parse_timestamp

from usage_etl.s3 import parse_timestamp, s3_client


def test_same_instant_as_botocore_for_every_spelling():
    for value in (
        "2026-10-01T02:00:00.000Z",
        "2026-10-01T02:00:00Z",
        "2026-10-01T23:59:59.999Z",
        "2026-10-01T04:00:00+02:00",
        "2026-10-01T02:00:00",  # no zone: botocore's (it assumes one)
        "Thu, 01 Oct 2026 02:00:00 GMT",  # an HTTP date header
        1790820000,
        "1790820000",
    ):
        ours, theirs = parse_timestamp(value), botocore_parse_timestamp(value)
        assert ours == theirs, value
        assert (ours.tzinfo is None) == (theirs.tzinfo is None), value
    assert parse_timestamp("2026-10-01T02:00:00.000Z") == datetime(2026, 10, 1, 2, tzinfo=UTC)


def test_the_clients_parse_with_it():
    client = s3_client(max_attempts=1)
    parser = client._endpoint._response_parser_factory.create_parser("rest-xml")
    assert parser._timestamp_parser is parse_timestamp
