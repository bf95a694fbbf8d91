"""A client of the OCI distribution API (the registry's /v2/ HTTP API), over requests.

Why not oras, skopeo or crane: attaching and checking artifacts takes a handful of calls (a manifest or
a blob by digest, a monolithic blob upload, a manifest PUT, the referrers API); we need the exact bytes
and digests the registry holds, verified here, and the referrers tag fallback for registries without
the referrers API (artifacts.py); and each tool would be one more dependency or binary to pin.

Transport: https, except for loopback registries (localhost, 127.0.0.0/8, ::1), which are spoken to
over plain http, as the Docker daemon treats them as insecure by default (the test registry and
`build.py --push` to 127.0.0.1:PORT rely on it). Every request has a bounded timeout.

Auth, as the Docker client does it: on a 401 with `WWW-Authenticate: Bearer realm=...,service=...,
scope=...` a token is fetched from the realm (anonymously, or with the Basic credentials of
`auths[host].auth` in $DOCKER_CONFIG/config.json or ~/.docker/config.json) and the request retried; a
token is cached per scope. A `Basic` challenge is answered with those credentials. Credential helpers
(credsStore, credHelpers) are not consulted.

Every failure is one line in a UserError: a registry that does not answer, a refusal (with the
status and the registry's own error code and message), no such manifest, a digest that is not the
one asked for, a body that is not JSON.
"""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import requests

from .. import references
from ..errors import UserError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
# Registry 2.8 answers a GET without an Accept it can honour with 400 or "OCI manifest found, but accept
# header does not support OCI manifests": every manifest GET sends all four.
MANIFEST_TYPES: tuple[str, ...] = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
TIMEOUT = (10, 60)  # seconds to connect, and between two reads (a multi-GB blob streams for longer)
CHUNK = 1 << 20


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _algorithm(digest: str) -> str:
    algorithm = digest.partition(":")[0]
    if algorithm not in references.DIGEST_HEX_LENGTH:
        raise UserError(f"digest {digest[:80]!r} is not sha256:, sha384: or sha512: and hex digits")
    return algorithm


def is_loopback(registry: str) -> bool:
    host = registry[1:registry.find("]")] if registry.startswith("[") else registry.rsplit(":", 1)[0]
    if host == "localhost" or registry == "::1":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Manifest:
    digest: str          # "sha256:..." of raw
    media_type: str
    raw: bytes

    def json(self) -> dict:
        return json.loads(self.raw)

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.raw)}


def credentials(host: str) -> tuple[str, str] | None:
    """(user, password) for host from Docker's config.json `auths`, or None."""
    path = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        auths = json.loads(path.read_text()).get("auths") or {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"{path} is not Docker's JSON config ({' '.join(str(exc).split())[:120]})") from None
    keys = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]
    if host in ("registry-1.docker.io", "docker.io", "index.docker.io"):
        keys.insert(0, "https://index.docker.io/v1/")
    for key in keys:
        if isinstance(auths.get(key), dict) and auths[key].get("auth"):
            try:
                user, sep, password = base64.b64decode(auths[key]["auth"], validate=True).decode().partition(":")
            except (ValueError, TypeError):
                sep = ""
            if not sep:
                raise UserError(f"{path}: auths[{key!r}].auth is not base64 of user:password")
            return user, password
    return None


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return f"no answer within {TIMEOUT[1]} s"
    text = " ".join(str(exc).split())
    if match := re.search(r"\[Errno -?\d+\] ([^'\")]+)", text):
        return match.group(1).strip().lower()
    if match := re.search(r"\[SSL: \w+\] ([^('\"]+)", text):
        return f"TLS: {match.group(1).strip()}"
    return text[-200:]


def said(response: requests.Response) -> str:
    """The registry's own words: 'HTTP 401 UNAUTHORIZED: authentication required'."""
    words = ""
    try:
        errors = response.json().get("errors") or []
        words = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        words = " ".join(response.text.split())[:160]
    return f"HTTP {response.status_code}" + (f" {words}" if words else "")


class Repository:
    def __init__(self, registry: str, path: str, *, scheme: str | None = None, session=None):
        self.registry, self.path = registry, path
        self.scheme = scheme or ("http" if is_loopback(registry) else "https")
        self.name = f"{registry}/{path}"
        self.session = session or requests.Session()
        self._tokens: dict[str, str] = {}     # scope -> bearer token
        self._authorization: str | None = None

    def _url(self, kind: str, reference: str) -> str:
        return f"{self.scheme}://{self.registry}/v2/{self.path}/{kind}/{reference}"

    def _authorize(self, response: requests.Response, sent: str | None) -> bool:
        """Answer a 401's challenge; True when the request is worth retrying."""
        scheme, _, rest = response.headers.get("WWW-Authenticate", "").partition(" ")
        creds = credentials(self.registry)
        if scheme.lower() == "basic":
            if not creds:
                return False
            self._authorization = "Basic " + base64.b64encode(":".join(creds).encode()).decode()
            return self._authorization != sent
        # RFC 7235: parameter names are case-insensitive, values a quoted string or a bare token
        params = {key.lower(): quoted or bare for key, quoted, bare in re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,"]+))', rest)}
        if scheme.lower() != "bearer" or not params.get("realm"):
            return False
        scope = params.get("scope", "")
        if scope in self._tokens and f"Bearer {self._tokens[scope]}" != sent:
            self._authorization = f"Bearer {self._tokens[scope]}"
            return True
        query = {key: params[key] for key in ("service", "scope") if params.get(key)}
        try:
            answer = self.session.get(params["realm"], params=query, auth=creds, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise UserError(f"the token service {params['realm']} of {self.registry} does not answer "
                            f"({_reason(exc)})") from None
        if answer.status_code != 200:
            raise UserError(f"the token service of {self.registry} refused a token for {scope or 'access'}: {said(answer)}")
        body = self._json(answer, f"the token from {params['realm']}")
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise UserError(f"the token service {params['realm']} of {self.registry} returned no token")
        self._tokens[scope] = token
        self._authorization = f"Bearer {token}"
        return True

    def _request(self, method: str, url: str, *, headers: dict | None = None, **kwargs) -> requests.Response:
        for attempt in (1, 2):
            sent = self._authorization
            try:
                response = self.session.request(method, url, headers={**(headers or {}), **(
                    {"Authorization": sent} if sent else {})}, timeout=TIMEOUT, **kwargs)
            except requests.RequestException as exc:
                raise UserError(f"registry {self.registry} does not answer over {self.scheme} ({_reason(exc)})") from None
            if response.status_code == 401 and attempt == 1 and self._authorize(response, sent):
                response.close()
                continue
            return response

    def _refused(self, response: requests.Response, what: str) -> UserError:
        if response.status_code in (401, 403):
            return UserError(f"{self.name}: {what} is not allowed ({said(response)})")
        return UserError(f"{self.name}: {what} was refused ({said(response)})")

    def _json(self, response: requests.Response, what: str):
        try:
            return json.loads(response.content)
        except ValueError:
            start = " ".join(response.content[:80].decode(errors="replace").split())
            raise UserError(f"{what} is not JSON (it starts {start!r})") from None

    def _check_digest(self, expected: str, raw: bytes, what: str) -> None:
        got = digest_of(raw, _algorithm(expected))
        if got != expected:
            raise UserError(f"{what} from {self.name} does not match its digest: expected {expected}, got {got}")

    def manifest_or_none(self, reference: str) -> Manifest | None:
        response = self._request("GET", self._url("manifests", reference), headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if response.status_code == 404 or (response.status_code != 200 and "MANIFEST_UNKNOWN" in said(response)):
            return None
        if response.status_code != 200:
            raise self._refused(response, f"reading the manifest {reference}")
        raw = response.content
        body = self._json(response, f"the manifest {reference} in {self.name}")
        header_type = response.headers.get("Content-Type", "").partition(";")[0].strip()
        media_type = body.get("mediaType") if isinstance(body, dict) and body.get("mediaType") else header_type
        if references.DIGEST.fullmatch(reference):
            self._check_digest(reference, raw, f"the manifest {reference}")
        digest = reference if references.DIGEST.fullmatch(reference) else digest_of(raw)
        told = response.headers.get("Docker-Content-Digest")
        if told and told.startswith("sha256:") and told != digest_of(raw):
            raise UserError(f"the manifest {reference} from {self.name} does not match the digest the registry "
                            f"gives it: expected {told}, got {digest_of(raw)}")
        return Manifest(digest, media_type, raw)

    def manifest(self, reference: str) -> Manifest:
        found = self.manifest_or_none(reference)
        if found is None:
            raise UserError(f"no manifest {reference} in {self.name}")
        return found

    def open_blob(self, digest: str):
        """A binary file object streaming the blob; UserError at EOF when its digest is not `digest`. Read it
        to the end: that is where the digest is checked (tarfile in stream mode stops at the archive's end
        marker, so drain the rest before trusting what it read)."""
        algorithm = _algorithm(digest)
        response = self._request("GET", self._url("blobs", digest), stream=True)
        if response.status_code == 404:
            response.close()
            raise UserError(f"no blob {digest} in {self.name}")
        if response.status_code != 200:
            response.close()
            raise self._refused(response, f"reading the blob {digest}")
        return io.BufferedReader(_VerifiedStream(response, digest, hashlib.new(algorithm), self), CHUNK)

    def blob(self, digest: str) -> bytes:
        with self.open_blob(digest) as stream:
            return stream.read()

    def push_blob(self, data: bytes) -> dict:
        descriptor = {"digest": digest_of(data), "size": len(data)}
        head = self._request("HEAD", self._url("blobs", descriptor["digest"]))
        if head.status_code == 200:
            return descriptor
        if head.status_code != 404:
            raise self._refused(head, f"checking for the blob {descriptor['digest']}")
        start = self._request("POST", self._url("blobs", "uploads/"))
        if start.status_code != 202 or not start.headers.get("Location"):
            raise self._refused(start, f"starting the upload of the blob {descriptor['digest']}")
        done = self._request("PUT", urljoin(start.url, start.headers["Location"]), params={"digest": descriptor["digest"]},
                             data=data, headers={"Content-Type": "application/octet-stream"})
        if done.status_code != 201:
            raise self._refused(done, f"storing the blob {descriptor['digest']} ({len(data)} bytes)")
        return descriptor

    def push_manifest(self, raw: bytes, media_type: str, reference: str) -> tuple[str, dict]:
        """Store the manifest as `reference` (a tag or its digest); (its digest, the response's headers,
        a case-insensitive mapping: OCI-Subject says the registry indexed its subject)."""
        digest = digest_of(raw)
        response = self._request("PUT", self._url("manifests", reference), data=raw, headers={"Content-Type": media_type})
        if response.status_code != 201:
            raise self._refused(response, f"storing the manifest {reference} ({media_type})")
        told = response.headers.get("Docker-Content-Digest")
        if told and told != digest:
            raise UserError(f"{self.name} stored the manifest {reference} under another digest: expected {digest}, got {told}")
        return digest, response.headers

    def referrers_api(self, digest: str, artifact_type: str | None = None) -> list[dict] | None:
        """The descriptors the referrers API lists for digest (all pages); None when the registry has no such API."""
        url, found, pages = self._url("referrers", digest), [], set()
        params = {"artifactType": artifact_type} if artifact_type else None
        while url:
            if url in pages:  # a `next` link back to a page already read would loop for ever
                raise UserError(f"{self.name}: the referrers of {digest} link back to a page already read ({url[:120]})")
            pages.add(url)
            response = self._request("GET", url, params=params, headers={"Accept": OCI_INDEX})
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise self._refused(response, f"listing the referrers of {digest}")
            try:
                index = json.loads(response.content)
            except ValueError:
                return None
            if not isinstance(index, dict) or index.get("mediaType", OCI_INDEX) != OCI_INDEX:
                return None
            found += [m for m in index.get("manifests") or [] if isinstance(m, dict)]
            url, params = (urljoin(response.url, response.links["next"]["url"]) if "next" in response.links else None), None
        return found


class _VerifiedStream(io.RawIOBase):
    def __init__(self, response: requests.Response, digest: str, hasher, repo: Repository):
        self._response, self._digest, self._hasher, self._repo, self._checked = response, digest, hasher, repo, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._response.raw.read(len(buffer), decode_content=True)
        except Exception as exc:  # urllib3's protocol errors and timeouts, OSError
            raise UserError(f"reading the blob {self._digest} from {self._repo.name} failed "
                            f"({' '.join(str(exc).split())[:160]})") from None
        if not data:
            if not self._checked:
                self._checked = True
                got = f"{self._hasher.name}:{self._hasher.hexdigest()}"
                if got != self._digest:
                    raise UserError(f"the blob from {self._repo.name} does not match its digest: "
                                    f"expected {self._digest}, got {got}")
            return 0
        self._hasher.update(data)
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._response.close()
        super().close()


def open_reference(ref: str) -> tuple[Repository, str]:
    """('registry/path:tag' or '...@sha256:...') -> (its repository, the tag or digest; a digest wins, tag defaults to latest)."""
    try:
        parsed = references.parse(ref)
    except ValueError as exc:
        raise UserError(f"{ref!r} is not an image reference: {exc}") from None
    registry = "registry-1.docker.io" if parsed.domain in ("docker.io", "") else parsed.domain
    return Repository(registry, parsed.path), parsed.digest or parsed.tag or "latest"
