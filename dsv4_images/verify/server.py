"""What verify is talking to: the served model and its context limit (`GET /v1/models`), and how
many tokens a prompt takes (`POST /tokenize`, a vLLM extension), so a `length` stop at the
server's own context limit is never blamed on the model."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from . import transport
from .transport import Deadline, HTTPFailure, Timeouts


class ServerProblem(Exception):
    """/v1/models answered, but not with a usable model list: verify cannot judge anything."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


@dataclass(frozen=True)
class ServerInfo:
    url: str
    model: str
    max_model_len: int | None
    models: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"url": self.url, "model": self.model, "max_model_len": self.max_model_len, "models": list(self.models)}


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def describe(base_url: str, timeouts: Timeouts, run: Deadline | None = None) -> ServerInfo:
    """The first model /v1/models lists and its max_model_len (None when the server does not say).

    Nothing listening is a UserError (one line, no report); a server that answers badly is a
    ServerProblem (a named "cannot judge" line in the report)."""
    try:
        doc = transport.get_json(base_url, "/v1/models", timeouts, run)
    except HTTPFailure as exc:
        if exc.kind in ("connect", "timeout-connect"):
            raise UserError(f"no OpenAI-compatible server answers at {base_url} ({exc.detail})") from None
        raise ServerProblem("models-unreadable", f"GET /v1/models: {exc.kind}: {exc.detail}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise ServerProblem("models-malformed", f"GET /v1/models is not an OpenAI model list (no \"data\" list): "
                                                f"{str(doc)[:80]!r}")
    if not doc["data"]:
        raise ServerProblem("models-empty", "GET /v1/models lists no model")
    ids = []
    for entry in doc["data"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"].strip():
            raise ServerProblem("models-malformed", f"GET /v1/models has an entry without a string id: {str(entry)[:80]!r}")
        ids.append(entry["id"])
    first = doc["data"][0]
    limit = first.get("max_model_len")
    if limit is not None and not _positive_int(limit):
        raise ServerProblem("models-malformed", f"GET /v1/models: max_model_len of {ids[0]!r} is {limit!r}, "
                                                "not a positive integer")
    return ServerInfo(base_url, ids[0], limit, tuple(ids))


def served_model(base_url: str, timeout: float = 10) -> str:
    """The first model id the server lists; one clear line (UserError) otherwise."""
    try:
        return describe(base_url, Timeouts(connect=timeout, get=timeout)).model
    except ServerProblem as exc:
        raise UserError(f"{base_url}: {exc.detail}") from None


class PromptCounter:
    """Prompt lengths from vLLM's POST /tokenize; None once the server shows it does not offer it."""

    def __init__(self, base_url: str, model: str, timeouts: Timeouts, run: Deadline | None = None):
        self.base_url, self.model, self.timeouts, self.run = base_url, model, timeouts, run
        self.offered: bool | None = None      # None: not asked yet
        self.reason = ""
        self._cache: dict[tuple[str, str], int] = {}

    def count(self, kind: str, prompt: str) -> int | None:
        if self.offered is False:
            return None
        key = (kind, prompt)
        if key in self._cache:
            return self._cache[key]
        body = {"model": self.model}
        if kind == "chat":
            body |= {"messages": [{"role": "user", "content": prompt}], "add_generation_prompt": True}
        else:
            body["prompt"] = prompt
        try:
            doc = transport.get_json(self.base_url, "/tokenize", self.timeouts, self.run, body=body)
        except HTTPFailure as exc:
            self.offered, self.reason = False, f"POST /tokenize: {exc.kind}: {exc.detail}"
            return None
        count = doc.get("count") if isinstance(doc, dict) else None
        if not _positive_int(count):
            self.offered, self.reason = False, f"POST /tokenize gave no token count: {str(doc)[:80]!r}"
            return None
        self.offered = True
        self._cache[key] = count
        return count
