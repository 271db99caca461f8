"""``capture.archive``: the archive tier's settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from capture.archive_location import S3Options
from capture.config import CaptureSettings


def test_no_archive_by_default() -> None:
    assert CaptureSettings().archive is None


def test_the_section_as_it_appears_in_the_yaml_file() -> None:
    settings = CaptureSettings.model_validate(
        {
            "archive": {
                "url": "s3://training-data/captures",
                "endpoint_url": "http://minio:9000",
                "region": "eu-west-1",
                "access_key_id": "AKID",
                "secret_access_key": "SECRET",
                "hot_days": 14,
            }
        }
    )
    archive = settings.archive
    assert archive is not None and archive.hot_days == 14
    assert archive.s3_options() == S3Options("http://minio:9000", "eu-west-1", "AKID", "SECRET")
    assert CaptureSettings.model_validate({"archive": {"url": "/var/archive"}}).archive


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ({"url": "ftp://host/x"}, "give file:///path or s3://bucket/prefix"),
        ({"url": "s3://b/p", "hot_day": 3}, "hot_day"),
        ({"url": "s3://b/p", "hot_days": 0}, "hot_days"),
        ({}, "url"),
    ],
)
def test_mistakes_are_named(section: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        CaptureSettings.model_validate({"archive": section})
