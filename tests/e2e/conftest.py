"""Fixtures for the end-to-end differential tests.

Three directories of binaries, given by the environment (scripts/test sets them):

  BASTION_BIN  our release build (tcprules, tcprulescheck, ...)
  UCSPI_V4     Debian's ucspi-tcp, unpacked: peers/ucspi-tcp/usr/bin
  UCSPI_V6     Debian's ucspi-tcp-ipv6, unpacked: peers/ucspi-tcp-ipv6/usr/bin

A missing variable or binary fails the tests that need it with a message saying what to
do; nothing is skipped silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ucspi import Toolset

_HINTS = {
    "BASTION_BIN": "our release build dir: swift build -c release --show-bin-path",
    "UCSPI_V4": "peers/ucspi-tcp/usr/bin (scripts/test downloads and unpacks it)",
    "UCSPI_V6": "peers/ucspi-tcp-ipv6/usr/bin (scripts/test downloads and unpacks it)",
}


def _toolset(variable: str, label: str) -> Toolset:
    value = os.environ.get(variable)
    if not value:
        pytest.fail(f"${variable} is not set: it must point at {_HINTS[variable]}", pytrace=False)
    directory = Path(value)
    if not directory.is_dir():
        pytest.fail(f"${variable}={value} is not a directory ({_HINTS[variable]})", pytrace=False)
    tools = Toolset(directory, label)
    for name in ("tcprules", "tcprulescheck"):
        path = directory / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"${variable}: {path} is missing or not executable ({_HINTS[variable]})",
                        pytrace=False)
    return tools


@pytest.fixture(scope="session")
def ours() -> Toolset:
    """Our tcprules and tcprulescheck."""
    return _toolset("BASTION_BIN", "ours")


@pytest.fixture(scope="session")
def real_v4() -> Toolset:
    """Debian's ucspi-tcp 0.88 (IPv4 only)."""
    return _toolset("UCSPI_V4", "ucspi-tcp")


@pytest.fixture(scope="session")
def real_v6() -> Toolset:
    """Debian's ucspi-tcp-ipv6 0.88 (the IPv6 patch: other colon rules, `:` prefixes)."""
    return _toolset("UCSPI_V6", "ucspi-tcp-ipv6")
