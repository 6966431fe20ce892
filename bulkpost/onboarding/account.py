"""The account a command works on: the keys it sends and the host it sends them to.

Owns the boundary every command and the Python API cross first. The keys as given:
``LSQ_ACCESS_KEY`` and ``LSQ_SECRET_KEY`` in the environment, or the Python API's
``access_key=`` / ``secret_key=`` (each defaulting to its variable), checked
(:func:`~bulkpost.core.credentials.checked_key`) and named in messages as the caller gave
them. The host: ``--host`` (``LSQ_HOST``, ``host=``) checked, else the keys' own, cached or
found by asking the regions (:mod:`bulkpost.onboarding.region`). And the step after: a
command whose host came from the cache and failed is made once more, on the host found
afresh, when the cached host now refuses the keys (:meth:`Account.retried`; a Python API
run, which cannot be made twice, asks the cached host first:
:func:`~bulkpost.onboarding.region.find_url`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from bulkpost.core.credentials import Credentials, checked_key
from bulkpost.delivery.client import check_host
from bulkpost.errors import AbortRun, UsageError
from bulkpost.onboarding.region import HostChoice, choose_host, host_again

ACCESS_ENV, SECRET_ENV, HOST_ENV = "LSQ_ACCESS_KEY", "LSQ_SECRET_KEY", "LSQ_HOST"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GivenKeys:
    """The keys as given, not yet checked (either may be empty), and how messages name
    them. Neither key appears in ``repr``."""

    access: str = field(repr=False)
    secret: str = field(repr=False)
    names: tuple[str, str] = (ACCESS_ENV, SECRET_ENV)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> GivenKeys:
        """The command line's keys: the environment's, named by their variables."""
        return cls(environ.get(ACCESS_ENV, ""), environ.get(SECRET_ENV, ""))

    @classmethod
    def from_arguments(cls, access_key: str | None, secret_key: str | None,
                       environ: Mapping[str, str] = os.environ) -> GivenKeys:
        """The Python API's keys: each argument, else its variable; stripped, and named as
        keywords (``access_key=``)."""
        return cls(_given(access_key, ACCESS_ENV, environ),
                   _given(secret_key, SECRET_ENV, environ), ("access_key=", "secret_key="))

    @property
    def complete(self) -> bool:
        """Whether both keys are given (not yet whether they are well formed)."""
        return bool(self.access and self.secret)

    def checked(self) -> Credentials:
        """The keys, each checked: refused when missing, or holding a space or a control
        character."""
        return Credentials(checked_key(self.names[0], self.access),
                           checked_key(self.names[1], self.secret))


def _given(value: str | None, variable: str, environ: Mapping[str, str]) -> str:
    return (value if value is not None else environ.get(variable, "")).strip()


def _stands(_result: object) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Account:
    """Checked keys, and the host they are sent to."""

    credentials: Credentials
    host: HostChoice

    @property
    def url(self) -> str:
        return self.host.url

    def retried(self, attempt: Callable[[Account], T],
                failed: Callable[[T], bool] = _stands) -> T:
        """``attempt`` on this account. When it failed (raised
        :class:`~bulkpost.errors.AbortRun`, or returned what ``failed`` says failed) on a
        host that came from the cache, and that host now refuses the keys (one question),
        the host is dropped from the cache, found afresh, and ``attempt`` made once more
        there. A failure for another reason stands as it was."""
        try:
            result = attempt(self)
        except AbortRun:
            if (url := host_again(self.host, self.credentials)) is None:
                raise
            return attempt(Account(self.credentials, HostChoice(url)))
        if failed(result) and (url := host_again(self.host, self.credentials)) is not None:
            return attempt(Account(self.credentials, HostChoice(url)))
        return result


def account_for(host_option: str, keys: GivenKeys) -> Account:
    """A command's account: ``--host`` checked (a bare name means ``https://``), then the
    keys; the host given, else the keys' own (cached, or found by asking the regions)."""
    given = check_host(host_option) if host_option else ""
    credentials = keys.checked()
    return Account(credentials, choose_host(given, credentials))


def python_host_and_keys(host: str | None, keys: GivenKeys, *, dry_run: bool,
                         environ: Mapping[str, str] = os.environ
                         ) -> tuple[str, Credentials | None]:
    """A Python API run's host (``host=``, else ``LSQ_HOST``) and checked keys.

    With both keys, a real run takes them; a dry run only with a host too (without one it
    asks no region, and reads no schemas). A real run without a host gets ``""``: its host
    is found from the keys when it starts (:func:`~bulkpost.onboarding.region.find_url`).
    A real run without both keys is refused, naming what is missing."""
    given_host = _given(host, HOST_ENV, environ)
    if keys.complete and (given_host or not dry_run):
        checked_host = check_host(given_host) if given_host else ""
        return checked_host, keys.checked()
    if not dry_run:
        *rest, last = [f"{name} (or {variable})" for name, variable, value in
                       zip(keys.names, (ACCESS_ENV, SECRET_ENV), (keys.access, keys.secret),
                           strict=True) if not value]
        listed = f"{', '.join(rest)} and {last}" if rest else last
        raise UsageError(f"a real run needs {listed}; dry_run=True sends nothing")
    return "", None  # a dry run without keys, or without a host: no schemas read
