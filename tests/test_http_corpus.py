"""Request corpora replayed against our sans-IO core.

Two corpora, both fed to `ServerConnection` whole, one byte at a time and in
seeded random splits, then driven to the end with `receive_data(b"")`;
whatever the split, the outcome must be the same:

* our own, `tests/corpus/` (one file per section of RFC 9112; the format is
  in its README): every case names the outcome, an error status or the
  requests read to their end (method, target, version, fields, body,
  trailers), and the test checks exactly that;
* gunicorn's (MIT), `tests/gunicorn_corpus/` (its README says where it
  comes from; `FLASH_SHARED_CORPUS` points at another copy): a valid row yields
  exactly the requests EXPECTED.tsv declares, each with a sane head; an
  invalid row raises `HTTPError` with a 4xx/5xx status, at the latest when
  the input ends. Where our policy differs from gunicorn's verdict, `POLICY`
  below says so, with the reason, and the test asserts what we do instead.

Nothing is skipped: a row whose verdict we do not share is asserted as we
answer it, and a missing corpus is a failure, not a skip.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field, replace

import pytest

from comparisons.bench_parser import http_file_to_bytes
from flash_green.config import Limits
from flash_green.http import CLOSED, END, NEED_DATA, PAUSED, HTTPError, Request, ServerConnection
from flash_green.wsgi import InputStream, WSGIContext, peer_keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: gunicorn's corpus, in the repository; FLASH_SHARED_CORPUS points at another copy.
CORPUS = os.environ.get("FLASH_SHARED_CORPUS") or os.path.join(ROOT, "tests", "gunicorn_corpus")

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
RANDOM_SPLITS = 3


# -- what a replay must produce -------------------------------------------------

@dataclass(frozen=True)
class Accept:
    """Parses into `requests` requests (the last may be cut short at EOF)."""

    requests: int
    #: The last request's body is shorter than announced: EOF inside it is a 400.
    eof_in_body: bool = False
    #: (key, value) the WSGI environ must hold; None = the key must be absent.
    environ: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class Reject:
    """Raises HTTPError with exactly `status` (any 4xx/5xx when None)."""

    status: int | None = None


@dataclass(frozen=True)
class Replay:
    limits: Limits
    expect: Accept | Reject


@dataclass(frozen=True)
class Policy:
    """Our verdict on a row where it differs from (or needs more than) gunicorn's."""

    why: str
    replays: tuple[Replay, ...] = field(default=())


DEFAULT = Limits()
NO_HOST = Limits(require_host=False)
#: gunicorn counts a field line with its CRLF, we count the field line alone
#: (RFC 9112 s.5): gunicorn's limit N is our N - 2.
GUNICORN_FIELD_SIZE = 8190 - 2

#: valid/040's `Transfer_Encoding: tricked` and `Content_Length: -1E23` must
#: not alias the real fields.
UNDERSCORE_DROPPED = (("HTTP_TRANSFER_ENCODING", None), ("CONTENT_LENGTH", "7"))
SCHEME_PAIR_KEPT = (("wsgi.url_scheme", "http"), ("HTTP_X_FORWARDED_PROTO", "https"),
                    ("HTTP_X_FORWARDED_SSL", "off"))

HOST_REASON = ("HTTP/1.1 without Host: we answer 400 (RFC 9112 s.3.2 MUST); "
               "replayed with require_host=False it is valid")


def no_host(requests: int = 1, **accept) -> Policy:
    return Policy(HOST_REASON, (Replay(DEFAULT, Reject(400)),
                                Replay(NO_HOST, Accept(requests, **accept))))


def strict(why: str, limits: Limits = DEFAULT, status: int = 400) -> Policy:
    """gunicorn accepts the row only in a compatibility mode; we refuse it."""
    return Policy(why, (Replay(limits, Reject(status)),))


def limited(why: str, limits: Limits, status: int, default: Accept | Reject) -> Policy:
    """A limit row: `default` under our defaults, `status` under `limits`."""
    return Policy(why, (Replay(DEFAULT, default), Replay(limits, Reject(status))))


POLICY: dict[str, Policy] = {
    # -- valid rows ----------------------------------------------------------
    **{f"valid/{name}.http": no_host() for name in (
        "004", "006", "007", "010", "011", "013", "014", "021", "031", "100")},
    "valid/005.http": Policy(
        "a #fragment in the target: 400 (RFC 9112 s.3.2, no target form holds one; "
        "gunicorn drops it); no Host either",
        (Replay(DEFAULT, Reject(400)), Replay(NO_HOST, Reject(400)))),
    **{f"valid/{name}.http": Policy(
        "a transfer coding we do not decode before chunked: 501 (RFC 9112 s.6.1), where "
        "gunicorn hands the app the body still coded; no Host either",
        (Replay(DEFAULT, Reject(400)), Replay(NO_HOST, Reject(501))))
       for name in ("025", "025_line", "029", "030")},
    **{f"valid/rfc9112_smuggle_{name}_chunked_01.http": strict(
        "a transfer coding we do not decode before chunked: 501 (RFC 9112 s.6.1)", status=501)
       for name in ("gzip", "te_identity")},
    "valid/027.http": strict("raw octets >= 0x80 in the target: 400 (RFC 9112 s.3.2, URI "
                             "syntax; h11 and waitress agree)", NO_HOST),
    "valid/rfc9112_target_absolute_userinfo_01.http": strict(
        "userinfo in an absolute-form target: 400 (RFC 9110 s.4.2.4)"),
    "valid/018.http": no_host(2),
    "valid/022.http": no_host(2),
    "valid/023.http": no_host(2),
    "valid/009.http": Policy(
        "Transfer-Encoding (even identity) with Content-Length: we reject both "
        "(RFC 9112 s.6.3 allows it; no smuggling by disagreement)",
        (Replay(DEFAULT, Reject(400)), Replay(NO_HOST, Reject(400)))),
    "valid/012.http": Policy(
        "Content-Type in a trailer: we refuse content-format fields in trailers "
        "(RFC 9110 s.6.5.1); no Host either",
        (Replay(DEFAULT, Reject(400)), Replay(NO_HOST, Reject(400)))),
    "valid/024.http": Policy(
        "an 8189-octet request line and an 8204-octet field: over our default field size "
        "(431); valid with the row's limits (line 8200; field 8210 with CRLF = 8208); "
        "414 once the line limit is below 8189",
        (Replay(DEFAULT, Reject(431)),
         Replay(Limits(max_request_line=8200, max_field_size=8208), Accept(1)),
         Replay(Limits(max_request_line=8188, max_field_size=8208), Reject(414)))),
    "valid/026.http": Policy(
        "an 8204-octet field: over our default field size (431); valid with the row's "
        "limit (8210 with CRLF = 8208); 431 one octet below the field",
        (Replay(DEFAULT, Reject(431)),
         Replay(Limits(max_field_size=8208), Accept(1)),
         Replay(Limits(max_field_size=8203), Reject(431)))),
    "valid/028.http": strict("space before colon: RFC 9112 s.5.1 says reject (400); "
                             "gunicorn strips it only in an unsafe compat mode"),
    "valid/031compat.http": strict("lower-case method: we refuse it like gunicorn's default "
                                   "(RFC 9110 allows any token; lower case is a typo or a probe)"),
    "valid/031compat2.http": strict("lower-case method: as valid/031compat"),
    "valid/compat_obs_fold.http": strict("obs-fold: RFC 9112 s.5.2 lets a server reject it; we do (400)"),
    "valid/compat_obs_fold_huge.http": strict("obs-fold: as valid/compat_obs_fold"),
    "valid/040_compat.http": Policy(
        "header_map=dangerous is not implemented: `_` names parse but never reach the environ",
        (Replay(DEFAULT, Accept(1, environ=UNDERSCORE_DROPPED)),)),
    "valid/040.http": Policy(
        "`_` names parse but are dropped from the environ (checked here too)",
        (Replay(DEFAULT, Accept(1, environ=UNDERSCORE_DROPPED)),)),
    "valid/099.http": Policy(
        "the file's body is shorter than its Content-Length: the head parses, "
        "EOF in the body is a 400",
        (Replay(DEFAULT, Accept(1, eof_in_body=True)),)),
    **{f"valid/pp_0{n}.http": strict("PROXY protocol is not implemented: the PROXY "
                                     "preamble is a malformed request line (400)")
       for n in (1, 2, 4, 5)},
    "valid/pp_03.http": Policy("no PROXY preamble at all: a plain valid request",
                               (Replay(DEFAULT, Accept(1)),)),
    # -- invalid rows ----------------------------------------------------------
    "invalid/006.http": limited(
        "4112-octet request line: RFC 9112 s.3 says support at least 8000, our default "
        "is 8190 so we accept it; 414 with gunicorn's 4094",
        Limits(max_request_line=4094), 414, Accept(1)),
    "invalid/007.http": limited(
        "an 8203-octet field: 431 under our default and gunicorn's",
        Limits(max_field_size=GUNICORN_FIELD_SIZE), 431, Reject(431)),
    "invalid/008.http": limited(
        "fields of 8189 and 4108 octets: within our per-field limit (8190 without CRLF) "
        "so accepted; 431 with gunicorn's 8190 counted with CRLF",
        Limits(max_field_size=GUNICORN_FIELD_SIZE), 431, Accept(1)),
    "invalid/017.http": limited(
        "an 8189-octet field: within our limit (CRLF not counted); 431 with gunicorn's; "
        "HTTP/1.1 without Host, so 400 with our defaults",
        Limits(max_field_size=GUNICORN_FIELD_SIZE, require_host=False), 431, Reject(400)),
    "invalid/limit_header_default_01.http": limited(
        "an 8190-octet field: exactly our limit (CRLF not counted), accepted; 431 with "
        "gunicorn's 8190 counted with CRLF",
        Limits(max_field_size=GUNICORN_FIELD_SIZE), 431, Accept(1)),
    "invalid/009.http": limited("103 fields: over our default 100 too",
                                Limits(max_header_fields=100), 431, Reject(431)),
    "invalid/010.http": limited("limit_request_field_size=10 -> max_field_size=8",
                                Limits(max_field_size=8, require_host=False), 431, Reject(400)),
    "invalid/011.http": limited("limit_request_fields=2 -> max_header_fields=2",
                                Limits(max_header_fields=2), 431, Accept(1)),
    "invalid/012.http": limited("limit_request_field_size=98 -> max_field_size=96",
                                Limits(max_field_size=96), 431, Accept(1)),
    "invalid/013.http": strict("obs-fold is always rejected (400): we never unfold, "
                               "so the row's size limit is not reached"),
    "invalid/019.http": Policy(
        "gunicorn refuses X-Forwarded-Proto: https with X-Forwarded-Ssl: off (400). That is the "
        "proxy layer's call, not the parser's: the head parses, the environ keeps the socket's "
        "scheme, and from a trusted peer the disagreeing pair is ignored (tests/test_proxy.py); "
        "no Host: replayed with require_host=False",
        (Replay(NO_HOST, Accept(1, environ=SCHEME_PAIR_KEPT)),)),
    "invalid/040.http": Policy(
        "header_map=refuse is not implemented: we accept and drop `_` names from the "
        "environ (PEP 3333 aliasing), so Content_Length cannot pose as Content-Length",
        (Replay(DEFAULT, Accept(1, environ=UNDERSCORE_DROPPED)),)),
    "invalid/chunked_07.http": Policy(
        "header_map=refuse is not implemented: Transfer_Encoding is dropped, the real "
        "Transfer-Encoding frames the body (no Host: replayed with require_host=False)",
        (Replay(DEFAULT, Reject(400)),
         Replay(NO_HOST, Accept(1, environ=(("HTTP_TRANSFER_ENCODING", "chunked"),))))),
    "invalid/pp_01.http": strict("PROXY protocol is not implemented: rejected as a malformed "
                                 "request line, not for gunicorn's reason"),
    "invalid/pp_02.http": strict("PROXY protocol is not implemented: as invalid/pp_01"),
    "invalid/pp_03.http": strict("PROXY protocol is not implemented: as invalid/pp_01"),
}

#: Invalid rows whose status is not the plain 400 (the rest must be 400: a
#: malformed version such as HTTP/111 or HTTP/0.99 is a 400, RFC 9112 s.2.3).
STATUS = {
    "invalid/version_02.http": 505,  # HTTP/2.0: well formed, not 1.x
}


# -- the rows -------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    file: str
    verdict: str
    expects: str
    config: str

    def data(self) -> bytes:
        with open(os.path.join(CORPUS, self.file), "rb") as f:
            return http_file_to_bytes(f.read())

    def replays(self) -> tuple[Replay, ...]:
        policy = POLICY.get(self.file)
        if policy is not None:
            return policy.replays
        if self.verdict == "valid":
            if self.config != "-":
                raise AssertionError(f"{self.file} needs a policy entry for {self.config}")
            return (Replay(DEFAULT, Accept(declared_requests(self.expects))),)
        status = STATUS.get(self.file, 400)
        # The real reason, not a missing Host, must reject the row.
        return (Replay(DEFAULT, Reject()), Replay(NO_HOST, Reject(status)))


def declared_requests(expects: str) -> int:
    match = re.match(r"(\d+) requests?;", expects)
    assert match, f"no request count in {expects!r}"
    return int(match.group(1))


def load_rows() -> list:
    path = os.path.join(CORPUS, "EXPECTED.tsv")
    params = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            cols = line.rstrip("\n").split("\t")
            row = Row(cols[0], cols[1], cols[2], cols[3])
            params.append(pytest.param(row, id=row.file))
    return params


ROWS = load_rows()


# -- driving the core -----------------------------------------------------------

@dataclass
class Outcome:
    requests: list[Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    trailers: list[list[tuple[str, str]]] = field(default_factory=list)
    error: HTTPError | None = None

    def summary(self) -> tuple:
        """Everything that must not depend on how the bytes were split."""
        heads = [(r.method, r.target, r.path, r.query, r.version, r.headers, r.keep_alive,
                  r.chunked, r.content_length, r.expect_continue) for r in self.requests]
        status = self.error.status if self.error else None
        return heads, self.bodies, self.trailers, status


def drive(pieces: list[bytes], limits: Limits) -> Outcome:
    """Feed `pieces` then EOF; collect requests until the connection ends."""
    conn = ServerConnection(limits)
    feed = iter([*pieces, b""])
    out = Outcome()
    try:
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                piece = next(feed, None)
                assert piece is not None, "NEED_DATA after EOF: the parser would hang"
                conn.receive_data(piece)
            elif type(event) is Request:
                out.requests.append(event)
                out.bodies.append(b"")
            elif type(event) is bytes:
                assert event, "an empty body piece"
                out.bodies[-1] += event
            elif event is END:
                out.trailers.append(list(conn.trailers))
            elif event is PAUSED:
                if not out.requests[-1].keep_alive:
                    break  # the rest is never read: the connection closes
                assert conn.start_next_cycle()
            else:
                assert event is CLOSED, event
                break
    except HTTPError as exc:
        out.error = exc
    return out


def splits(data: bytes, seed: str) -> list[list[bytes]]:
    """Whole, byte by byte, and RANDOM_SPLITS seeded random cuttings."""
    ways = [[data], [data[i:i + 1] for i in range(len(data))]]
    rng = random.Random(seed)
    for _ in range(RANDOM_SPLITS):
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 12))))
        ways.append([data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])])
    return ways


def check_head(request: Request) -> None:
    """A parsed head is sane: tokens, versions, trimmed values, a split target."""
    assert TOKEN.fullmatch(request.method) and request.method.upper() == request.method
    assert request.version in ("HTTP/1.0", "HTTP/1.1")
    assert request.target and not re.search(r"[\x00-\x20\x7f]", request.target)
    if request.target.startswith("/"):
        rebuilt = request.path + ("?" + request.query if "?" in request.target else "")
        assert rebuilt == request.target
    for name, value in request.headers:
        assert TOKEN.fullmatch(name) and name == name.lower(), name
        assert not re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value), value
        assert value == value.strip(" \t")
    if request.chunked:
        assert request.content_length is None
    assert not (request.version == "HTTP/1.0" and request.chunked)


def field_lines(data: bytes) -> int:
    """Field lines in the first head of `data` (an independent count)."""
    head = data.lstrip(b"\r\n")
    return head[:head.find(b"\r\n\r\n")].count(b"\r\n")


def check_environ(request: Request, expected: tuple[tuple[str, str | None], ...]) -> None:
    ctx = WSGIContext(lambda e, s: [], "localhost", 80)
    environ = ctx.environ(peer_keys(("127.0.0.1", 1)), request, InputStream(None))
    for key, value in expected:
        assert environ.get(key) == value, key
    assert environ.get("CONTENT_LENGTH") == request.header("content-length")


# -- the test -------------------------------------------------------------------

@pytest.mark.parametrize("row", ROWS)
def test_corpus_row(row: Row) -> None:
    data = row.data()
    for replay in row.replays():
        outcomes = [drive(pieces, replay.limits) for pieces in splits(data, row.file)]
        first = outcomes[0]
        for other in outcomes[1:]:
            assert other.summary() == first.summary(), f"{row.file}: result depends on the split"
        if isinstance(replay.expect, Accept):
            check_accepted(row, data, first, replay.expect)
        else:
            check_rejected(row, first, replay.expect)


def check_accepted(row: Row, data: bytes, out: Outcome, expect: Accept) -> None:
    assert len(out.requests) == expect.requests, (row.file, out.requests, out.error)
    if expect.eof_in_body:
        assert out.error is not None and out.error.status == 400, out.error
        assert len(out.bodies[-1]) < out.requests[-1].content_length
    else:
        assert out.error is None, f"{row.file}: {out.error}"
        assert len(out.trailers) == expect.requests, "every request ended"
    for request, body in zip(out.requests, out.bodies):
        check_head(request)
        if request.content_length is not None and not expect.eof_in_body:
            assert len(body) == request.content_length
        check_environ(request, expect.environ)
    assert len(out.requests[0].headers) == field_lines(data)


def check_rejected(row: Row, out: Outcome, expect: Reject) -> None:
    assert out.error is not None, f"{row.file} was accepted: {out.requests}"
    assert 400 <= out.error.status <= 599
    if expect.status is not None:
        assert out.error.status == expect.status, (row.file, str(out.error))
    for request in out.requests:
        check_head(request)


def test_every_policy_entry_names_a_corpus_file() -> None:
    """A renamed corpus file must not leave a stale (never applied) policy row."""
    files = {p.values[0].file for p in ROWS}
    assert set(POLICY) <= files, set(POLICY) - files
    assert set(STATUS) <= files


def test_gunicorn_field_limit_mapping() -> None:
    """Our field limit excludes the CRLF: a line of exactly max_field_size passes."""
    line = b"X: " + b"y" * 20
    request = b"GET / HTTP/1.0\r\n" + line + b"\r\n\r\n"
    assert drive([request], replace(DEFAULT, max_field_size=len(line))).error is None
    assert drive([request], replace(DEFAULT, max_field_size=len(line) - 1)).error.status == 431


# -- our own corpus (tests/corpus) ---------------------------------------------------

OWN_CORPUS = os.path.join(ROOT, "tests", "corpus")
CASE_KEYS = {"rfc", "expect", "limits", "request", "path", "query", "field", "body", "trailer",
             "keep-alive", "continue"}


@dataclass
class Expected:
    """One request a case expects to be read to its end."""

    method: str
    target: str
    version: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    path: str | None = None
    query: str | None = None
    keep_alive: bool | None = None
    expect_continue: bool | None = None


@dataclass
class Case:
    file: str
    name: str
    rfc: str
    #: The HTTPError status the input ends in; None: it ends cleanly.
    status: int | None
    limits: Limits
    requests: list[Expected]
    data: bytes

    @property
    def id(self) -> str:
        return f"{self.file.removesuffix('.http')}/{self.name}"


ESCAPE = re.compile(rb"\\(r\\n|n|t|0|x[0-9A-Fa-f]{2}|.?)", re.S)
ESCAPED = {b"r\\n": b"\r\n", b"n": b"\n", b"t": b"\t", b"0": b"\x00"}


def corpus_bytes(text: bytes) -> bytes:
    """gunicorn's file convention (layout newlines out, then escapes), in one
    pass so that `\\x5C` can stand for a backslash."""
    def escape(match: re.Match) -> bytes:
        code = match.group(1)
        if code[:1] == b"x" and len(code) == 3:
            return bytes([int(code[1:], 16)])
        if code not in ESCAPED:
            raise ValueError(f"unknown escape \\{code.decode('latin-1')}")
        return ESCAPED[code]

    return ESCAPE.sub(escape, text.replace(b"\n", b""))


def unescape(text: str) -> bytes:
    return corpus_bytes(text.encode("latin-1"))


def name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(": ")
    assert sep or text.endswith(":"), f"not `name: value`: {text!r}"
    return name.rstrip(":"), unescape(value).decode("latin-1")


def parse_limits(text: str) -> Limits:
    values: dict = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        values[key] = value == "true" if value in ("true", "false") else int(value)
    return Limits(**values)


def parse_case(file: str, block: bytes) -> Case:
    header, sep, wire = block.partition(b"\n---\n")
    assert sep, f"{file}: a case without its `---` line"
    name, *lines = header.decode("latin-1").split("\n")
    keys: dict[str, str] = {}
    requests: list[Expected] = []
    for line in lines:
        key, sep, value = line.partition(": ")
        assert sep and key in CASE_KEYS, f"{file} {name}: bad line {line!r}"
        if key == "request":
            method, target, version = value.split(" ")
            requests.append(Expected(method, target, version))
        elif key in ("rfc", "expect", "limits"):
            assert key not in keys, f"{file} {name}: {key} twice"
            keys[key] = value
        else:
            assert requests, f"{file} {name}: {key} before any request"
            add_to_request(requests[-1], key, value)
    assert keys.get("rfc") and keys.get("expect"), f"{file} {name}: rfc and expect are required"
    status = None if keys["expect"] == "accept" else int(keys["expect"])
    try:
        data = corpus_bytes(wire)
    except ValueError as exc:
        raise AssertionError(f"{file} {name}: {exc} (a backslash is \\x5C)") from None
    return Case(file, name.strip(), keys["rfc"], status, parse_limits(keys.get("limits", "")),
                requests, data)


def add_to_request(request: Expected, key: str, value: str) -> None:
    if key == "field":
        request.fields.append(name_value(value))
    elif key == "trailer":
        request.trailers.append(name_value(value))
    elif key == "body":
        request.body = unescape(value)
    elif key in ("path", "query"):
        setattr(request, key, unescape(value).decode("latin-1"))
    else:
        assert value in ("yes", "no"), f"{key}: yes or no, not {value!r}"
        setattr(request, "keep_alive" if key == "keep-alive" else "expect_continue", value == "yes")


def load_own_corpus() -> list[Case]:
    cases = []
    for file in sorted(os.listdir(OWN_CORPUS)):
        if not file.endswith(".http"):
            continue
        with open(os.path.join(OWN_CORPUS, file), "rb") as f:
            text = f.read()
        assert text.startswith(b"### "), f"{file} must start with a case"
        cases += [parse_case(file, block) for block in text[4:].split(b"\n### ")]
    return cases


OWN_CASES = load_own_corpus()


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in OWN_CASES])
def test_own_corpus_case(case: Case) -> None:
    outcomes = [drive(pieces, case.limits) for pieces in splits(case.data, case.id)]
    for other in outcomes[1:]:
        assert other.summary() == outcomes[0].summary(), f"{case.id}: result depends on the split"
    out = outcomes[0]
    assert (out.error.status if out.error else None) == case.status, (case.rfc, str(out.error))
    # A request the input cut short (its head read, then an error) is not "read".
    read = len(out.trailers)
    assert read == len(case.requests), (case.rfc, out.requests[:read])
    for got, body, trailers, want in zip(out.requests, out.bodies, out.trailers, case.requests):
        check_expected(got, body, trailers, want)


def check_expected(got: Request, body: bytes, trailers: list, want: Expected) -> None:
    assert (got.method, got.target, got.version) == (want.method, want.target, want.version)
    assert got.headers == want.fields
    assert body == want.body and trailers == want.trailers
    if got.content_length is not None:
        assert got.content_length == len(body)
    for name in ("path", "query", "keep_alive", "expect_continue"):
        if getattr(want, name) is not None:
            assert getattr(got, name) == getattr(want, name), name


def test_own_corpus_covers_every_section() -> None:
    """Over a hundred cases, unique names, valid and invalid ones in every file
    the README lists (and no file it does not)."""
    with open(os.path.join(OWN_CORPUS, "README.md"), encoding="utf-8") as f:
        listed = set(re.findall(r"^\| `([\w.-]+\.http)` \|", f.read(), re.M))
    files = {case.file for case in OWN_CASES}
    assert files == listed
    assert len(OWN_CASES) > 100
    assert len({case.id for case in OWN_CASES}) == len(OWN_CASES)
    for file in files:
        kinds = {case.name.split("/")[0] for case in OWN_CASES if case.file == file}
        assert kinds == {"valid", "invalid"}, file
