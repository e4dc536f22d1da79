"""Keeping credentials out of messages, reprs and pickles of remote files.

A URL may carry a password (``https://user:pass@host/...``) or a signed query string
(``?X-Amz-Signature=...``); ``storage_options`` may carry keys, secrets and tokens.
Messages and reprs name files by :func:`redact_url`; pickles carry
:func:`public_options` only, so a worker reopening a file uses its own credentials.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# storage_options names (any nesting level) whose values are credentials.
_SECRET = re.compile(
    r"(^|_)(key|secret|token|password|passwd|credentials?|auth\w*|session|signature|"
    r"cookies?|profile)($|_)|^(key|secret|token|password|username|user)$|"
    r"access_key|private_key|client_secret|api_key",
    re.IGNORECASE,
)
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """``url`` without its user, password and query string (nor fragment).

    Examples
    --------
    >>> from lazyh5.backend.redact import redact_url
    >>> redact_url("https://me:hunter2@example.org/data/x.h5?X-Amz-Signature=abc")
    'https://***@example.org/data/x.h5?***'
    >>> redact_url("s3://bucket/x.h5")
    's3://bucket/x.h5'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<url>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def without_password(url: str) -> str:
    """``url`` without its user and password (the query string kept: a worker needs
    it to reopen a pre-signed URL).

    Examples
    --------
    >>> from lazyh5.backend.redact import without_password
    >>> without_password("https://me:pw@example.org/x.h5?v=2")
    'https://example.org/x.h5?v=2'
    """
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


# Credentials given to this process in storage_options: scrubbed from any message
# built from a library's error text (which might quote them).
_known: set[str] = set()


def remember_secrets(options: Mapping[str, Any] | None) -> None:
    """Note the credentials in ``options`` so :func:`redact_text` scrubs them."""
    for name, value in (options or {}).items():
        if isinstance(value, Mapping):
            remember_secrets(value)
        elif is_secret(name) and isinstance(value, str) and len(value) >= 4:
            _known.add(value)


def url_password(url: str) -> str | None:
    """The password in ``url``, if any.

    >>> url_password("https://me:pw@example.org/x.h5"), url_password("s3://b/x.h5")
    ('pw', None)
    """
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`redact_url`) and every credential
    noted by :func:`remember_secrets` replaced by ``***``.

    Examples
    --------
    >>> from lazyh5.backend.redact import redact_text, remember_secrets
    >>> redact_text("503 for url='http://u:p@h:9/b/x.h5?sig=1'")
    "503 for url='http://***@h:9/b/x.h5?***'"
    >>> remember_secrets({"secret": "s3cr3t-value"})
    >>> redact_text("signature of s3cr3t-value does not match")
    'signature of *** does not match'
    """
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    for value in sorted(_known, key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def is_secret(name: str) -> bool:
    """Whether a ``storage_options`` entry named ``name`` holds a credential.

    Examples
    --------
    >>> from lazyh5.backend.redact import is_secret
    >>> [is_secret(k) for k in ("key", "secret", "aws_session_token", "anon", "endpoint_url")]
    [True, True, True, False, False]
    """
    return bool(_SECRET.search(str(name)))


def public_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` without credentials, at any nesting level (``client_kwargs``,
    ``headers``...): what may be shown or pickled.

    Examples
    --------
    >>> from lazyh5.backend.redact import public_options
    >>> public_options({"key": "AK", "secret": "S", "anon": False,
    ...                 "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000",
    ...                                   "aws_secret_access_key": "S"}})
    {'anon': False, 'client_kwargs': {'endpoint_url': 'http://127.0.0.1:9000'}}
    """
    out: dict[str, Any] = {}
    for name, value in (options or {}).items():
        if is_secret(name):
            continue
        out[name] = public_options(value) if isinstance(value, Mapping) else value
    return out
