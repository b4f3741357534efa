"""Fixtures of the reader tests: a local S3 server (moto, 127.0.0.1) with a bucket."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest


@pytest.fixture(scope="module")
def s3():
    """(endpoint "host:port", a ``pyarrow.fs.S3FileSystem`` on it) with a bucket "datasets"."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    fs = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http",
                           access_key="testing", secret_key="testing", region="us-east-1",
                           allow_bucket_creation=True)
    fs.create_dir("datasets")
    yield f"{host}:{port}", fs
    server.stop()
