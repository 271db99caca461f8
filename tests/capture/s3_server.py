"""A real S3-compatible server for the archive tests: moto's server mode, as its own process on
a free loopback port, with a bucket made through boto3 like any client would."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3

from capture.archive_location import S3Options
from tests.processes import Running, free_port, wait_for

ACCESS_KEY = "test-archive-key"
SECRET_KEY = "test-archive-secret"
REGION = "us-east-1"


@dataclass
class S3Server:
    running: Running

    @property
    def url(self) -> str:
        return self.running.url

    def options(self) -> S3Options:
        return S3Options(
            endpoint_url=self.url,
            region=REGION,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
        )

    def make_bucket(self, name: str) -> None:
        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        client.create_bucket(Bucket=name)

    def keys(self, bucket: str) -> list[str]:
        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        listed = client.list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))


@contextmanager
def s3_server(workdir: Path) -> Iterator[S3Server]:
    port = free_port()
    log = workdir / f"moto-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    running = Running(process, port, log)
    try:
        wait_for(f"{running.url}/moto-api/", process, log, seconds=30)
        yield S3Server(running)
    finally:
        running.stop()
