"""Whom a run trusts: one TLS policy, one SSL context, every connection.

A downloaded model is often code (a pickled checkpoint runs when it is
loaded), so whoever answers a TLS connection must prove to be the store. Every
connection a run makes (the direct path, botocore's client, through a proxy or
not, in the parent or a worker process) uses the context built here from one
:class:`Trust`: the certificate chain and the host name (IP SANs for an IP
endpoint) are always checked, unless the user passed ``--no-verify-ssl``.

Which CAs are trusted, first match wins, as botocore orders them:
``--ca-bundle``, ``AWS_CA_BUNDLE``, the profile's ``ca_bundle``, else the
Mozilla CA bundle that certifi ships (what botocore itself uses when certifi
is installed; see docs/transport.md for why it is the default).

A certificate that fails the check ends the run with one line that names the
host, what is wrong and how to fix it (:func:`untrusted`): it is never retried
and never sent down the other request path.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._errors import TlsError, UsageError

_UNKNOWN_ISSUER = frozenset(
    {
        2,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
        18,  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        19,  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
        20,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        21,  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
    }
)
_NAME_MISMATCH = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH
_EXPIRED = 10  # X509_V_ERR_CERT_HAS_EXPIRED
_NOT_YET_VALID = 9  # X509_V_ERR_CERT_NOT_YET_VALID
_CA_HINT = "--ca-bundle, AWS_CA_BUNDLE or ca_bundle in the AWS config"
INSECURE_WARNING = (
    "warning: TLS certificates are not checked (--no-verify-ssl): whoever answers "
    "can serve any file, and a model file may be code"
)


@dataclass(frozen=True, slots=True)
class Trust:
    """What a run's TLS connections trust (picklable: worker processes get it)."""

    verify: bool = True  # False: --no-verify-ssl
    ca_bundle: str | None = None  # a PEM file trusted instead of the default
    named_by: str = ""  # where ca_bundle was named, for messages
    proxy_ca_bundle: str | None = None  # also trusted, for TLS to an https:// proxy

    def context(self) -> ssl.SSLContext:
        """The SSL context, built once per process (parsing a bundle takes ~35 ms)."""
        return _context(self)

    def describe(self) -> str:
        if not self.verify:
            return "nothing (--no-verify-ssl)"
        if self.ca_bundle is None:
            return "the default CA bundle (certifi's)"
        return f"the CA bundle {self.named_by} names ('{self.ca_bundle}')"


def resolve_trust(
    *,
    verify: bool,
    ca_bundle: str | None,
    environ_bundle: str | None,
    profile_bundle: str | None = None,
    profile: str | None = None,
    proxy_ca_bundle: str | None = None,
) -> Trust:
    """The run's Trust: --ca-bundle, then AWS_CA_BUNDLE, then the profile's ca_bundle."""
    if ca_bundle:
        return Trust(verify, ca_bundle, "--ca-bundle", proxy_ca_bundle)
    if environ_bundle:
        return Trust(verify, environ_bundle, "AWS_CA_BUNDLE", proxy_ca_bundle)
    if profile_bundle:
        where = f"ca_bundle in profile '{profile}'" if profile else "ca_bundle in the AWS config"
        return Trust(verify, profile_bundle, where, proxy_ca_bundle)
    return Trust(verify, None, "", proxy_ca_bundle)


def default_ca_bundle() -> str:
    import certifi

    return str(certifi.where())


@functools.lru_cache(maxsize=4)
def _context(trust: Trust) -> ssl.SSLContext:
    if not trust.verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context(cafile=_bundle(trust.ca_bundle, trust.named_by))
    if trust.proxy_ca_bundle:
        _load(context, trust.proxy_ca_bundle, "proxy_ca_bundle in the AWS config")
    # create_default_context checks names already; said here because the
    # botocore path's default (urllib3's context) does not, and must not win.
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _bundle(path: str | None, named_by: str) -> str:
    if path is None:
        return default_ca_bundle()
    _load(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), path, named_by)  # check it: one line if not
    return path


def _load(context: ssl.SSLContext, path: str, named_by: str) -> None:
    """Load *path*'s CAs into *context*; a bundle that is not one is a UsageError."""
    try:
        context.load_verify_locations(cafile=path)
    except FileNotFoundError:
        raise UsageError(f"{named_by} names '{path}', which does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{named_by} names '{path}', which is a folder, not a file") from None
    except OSError as exc:
        reason = exc.strerror or exc
        raise UsageError(f"{named_by} names '{path}', which cannot be read: {reason}") from None
    except ssl.SSLError:
        raise UsageError(
            f"{named_by} names '{path}', which holds no PEM certificate "
            "(it must be CA certificates, '-----BEGIN CERTIFICATE-----' ...)"
        ) from None


def untrusted(url: str, error: BaseException | None, trust: Trust) -> TlsError:
    """One line for a TLS failure talking to *url*: what is wrong, how to fix it.

    *error* is the ssl module's error (aiohttp's wraps it); a certificate
    that fails verification says why in its ``verify_code``.
    """
    parts = urlsplit(url)
    host = parts.hostname or url
    origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else url
    if isinstance(getattr(error, "host", None), str):  # aiohttp's: the proxy's, maybe
        host = str(error.host)  # type: ignore[union-attr]
        port = getattr(error, "port", None)
        shown = f"[{host}]" if ":" in host else host
        origin = f"https://{shown}" + (f":{port}" if port not in (None, 443) else "")
    cause = _ssl_cause(error)
    if isinstance(cause, ssl.SSLCertVerificationError):
        code = cause.verify_code
        if code in _NAME_MISMATCH:
            return TlsError(
                f"refused {origin}: its TLS certificate is not for '{host}' (a name mismatch); "
                "check the host in --endpoint-url (a CA bundle cannot fix this)"
            )
        if code == _EXPIRED:
            return TlsError(
                f"refused {origin}: its TLS certificate has expired (or this machine's clock "
                "is wrong); the server's certificate must be renewed"
            )
        if code == _NOT_YET_VALID:
            return TlsError(
                f"refused {origin}: its TLS certificate is not valid yet (check this "
                "machine's clock)"
            )
        if code in _UNKNOWN_ISSUER:
            return TlsError(
                f"refused {origin}: its TLS certificate is issued by a CA that "
                f"{trust.describe()} does not hold; if you trust that CA, name its "
                f"certificate with {_CA_HINT}"
            )
        return TlsError(
            f"refused {origin}: its TLS certificate failed the check "
            f"({cause.verify_message or cause}); trusted: {trust.describe()}"
        )
    reason = getattr(cause, "reason", None) or str(cause or error)
    return TlsError(
        f"no TLS connection to {origin} ({reason}): check that it serves https "
        "(use http:// in --endpoint-url if it does not)"
    )


def _ssl_cause(error: BaseException | None) -> BaseException | None:
    """The ssl module's own exception behind *error*: aiohttp's errors keep it
    in ``certificate_error`` or ``os_error`` (and also subclass ssl's errors,
    without its fields)."""
    for _ in range(5):
        inner = getattr(error, "certificate_error", None) or getattr(error, "os_error", None)
        if inner is None:
            break
        error = inner
    return error
