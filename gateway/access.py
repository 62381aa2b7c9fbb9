"""Who may use the gateway: tokens and roles, the page's token cookie, and CORS (closed unless configured).

Two roles. A *camera user* (``EMOSTREAM_TOKEN``) opens the page, makes offers and closes or sends
feedback on their own streams, each proven by the stream's key from the offer's answer
(``X-Stream-Key``). An *operator* (``EMOSTREAM_ADMIN_TOKEN``) may also list every stream, manage
models and retraining (:func:`operator_only`). With neither token set everyone is an operator (a
loopback-only gateway of one user); with only the camera token set the operator routes are closed.
Every route but :data:`OPEN_PATHS` needs a token when one is set, as ``Authorization: Bearer
<token>`` (API clients, offers) or the ``emostream_token`` cookie (the page). Opening
``/?token=<token>`` once sets the cookie (HttpOnly, SameSite=Strict, Secure when the browser came
over https, directly or through a trusted proxy) and redirects to the same URL without the token,
so it stays out of the address bar, history and logs. Tokens are compared in constant time. A
gateway reachable from other machines refuses to start without one (:func:`check_exposure`).
Other websites the user visits are kept out: a request that changes something must not come from a
page of another origin (:func:`origin_guard`, no cross-site request forgery, on every gateway: the
cookie goes with requests from the same *site*, another port or subdomain of it included), and
without a camera token, where anyone may use the gateway, a request must name it by a loopback host
(:func:`host_guard`, no DNS rebinding).
Behind a reverse proxy (``EMOSTREAM_TRUSTED_PROXIES``) the client address used for limits comes
from ``X-Forwarded-For``, and only when the peer is one of those proxies.
"""

import hmac
import ipaddress

from aiohttp import web
from multidict import MultiDict

from emostream.config import Settings
from gateway.api import ApiError, Handler

TOKEN_COOKIE = "emostream_token"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/api/targets"})
"""Routes for probes and monitoring, open even with a token: they carry no personal data
(no stream or user ids, no frames) and Prometheus and the kubelet scrape them without one."""
CORS_METHODS = "GET, POST, DELETE"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CORS_HEADERS = "Authorization, Content-Type, X-Stream-Key"
"""Request headers a listed origin may send: the tokens, JSON bodies and a stream's key."""


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the gateway reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost, or "" (every address)


def check_exposure(settings: Settings) -> None:
    """Raise ``ValueError`` when the gateway would be reachable from other machines without a token."""
    if not settings.token and not is_loopback(settings.host):
        raise ValueError(
            f"the gateway would listen on {settings.host or 'every address'}, reachable from other machines: "
            "set EMOSTREAM_TOKEN to a long random secret (e.g. `openssl rand -hex 32`), or bind to 127.0.0.1"
        )


def trusted_networks(settings: Settings) -> list[Network]:
    return [ipaddress.ip_network(p.strip(), strict=False) for p in settings.trusted_proxies.split(",") if p.strip()]


def _within(address: str, networks: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(request: web.Request, trusted: list[Network]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy, then the right-most
    ``X-Forwarded-For`` address that is not one of the trusted proxies (a client can prepend
    anything to the header, but not what the proxies append)."""
    peer = request.remote or ""
    if not _within(peer, trusted):
        return peer
    forwarded = [a.strip() for h in request.headers.getall("X-Forwarded-For", []) for a in h.split(",") if a.strip()]
    for address in reversed(forwarded):
        if not _within(address, trusted):
            return address
    return forwarded[0] if forwarded else peer


NAT64 = ipaddress.ip_network("64:ff9b::/96")
"""IPv4 hosts seen through a NAT64 gateway: one per address, as over IPv4."""


def limited_as(address: str) -> str:
    """Who a client ``address`` counts as for limits: a public IPv6 address as its /64 network, which
    one host holds whole (so rotating addresses does not multiply its limits); any other as itself."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_global and ip not in NAT64:
        return str(ipaddress.ip_network((ip, 64), strict=False))
    return address


def came_over_https(request: web.Request, trusted: list[Network]) -> bool:
    """Whether the browser's connection was TLS: here, or at a trusted proxy that says so."""
    if request.secure:
        return True
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return proto == "https" and _within(request.remote or "", trusted)


def _matches(given: str | None, token: bytes) -> bool:
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "backslashreplace"), token)


def _bearer(request: web.Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


OPERATOR = "operator"
CAMERA = "camera"
ROLE = web.RequestKey("role", str)
"""The request's role, set by :func:`access_middleware`."""


def operator_only(path: str) -> bool:
    """Models, retraining and the list of every stream: an operator's, not a camera user's."""
    if path.startswith("/api/training-jobs") or path == "/api/streams":
        return True
    return path.startswith("/api/models") and not path.endswith("/card")


def role_of(settings: Settings, given: str | None) -> str | None:
    """Operator, camera, or None (no valid token) for a request carrying the token ``given``."""
    if not settings.token and not settings.admin_token:
        return OPERATOR  # nothing configured: one user on a loopback-only gateway
    if settings.admin_token and _matches(given, settings.admin_token.encode()):
        return OPERATOR
    if not settings.token or _matches(given, settings.token.encode()):
        return CAMERA
    return None


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_guard(request: web.Request) -> None:
    """:class:`ApiError` 403 for a request addressed to a name other than a loopback one: on a gateway
    without a camera token, a page of another site whose name was made to point here."""
    if not is_loopback(request.url.host or ""):
        raise ApiError(403, f"host {request.host!r} is not a loopback name; set EMOSTREAM_TOKEN to serve others")


def origin_guard(request: web.Request, cors_origins: frozenset[str], trusted: list[Network]) -> None:
    """:class:`ApiError` 403 for a request that changes something sent by a page of another origin
    than the gateway's own (its ``Host``, or a trusted proxy's ``X-Forwarded-Host``) and not listed in
    ``EMOSTREAM_CORS_ORIGINS``. Scripts and API clients send no ``Origin``."""
    origin = request.headers.get("Origin")
    if request.method in SAFE_METHODS or not origin or origin in cors_origins:
        return
    own = {request.host}
    if _within(request.remote or "", trusted):
        own.update(h.split(",")[0].strip() for h in request.headers.getall("X-Forwarded-Host", []))
    if origin.partition("://")[2] not in own:
        raise ApiError(
            403,
            f"cross-site request from {origin} refused (this gateway is addressed as {request.host}: a reverse "
            "proxy must pass the browser's Host on, e.g. nginx's `proxy_set_header Host $http_host`)",
        )


def access_middleware(settings: Settings):
    """Tokens and roles (see the module documentation); the role is left in ``request[ROLE]``."""
    trusted, origins = trusted_networks(settings), cors_origins(settings)
    tokens = [token.encode() for token in (settings.token, settings.admin_token) if token]

    @web.middleware
    async def check_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        if not settings.token:
            host_guard(request)
        origin_guard(request, origins, trusted)
        if request.path == "/" and "token" in request.query:
            given = request.query["token"]
            if not any(_matches(given, token) for token in tokens):
                raise ApiError(401, "wrong token")
            query = MultiDict(request.query)
            del query["token"]
            response = web.Response(status=303, headers={"Location": str(request.rel_url.with_query(query))})
            secure = came_over_https(request, trusted)
            response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="Strict", path="/", secure=secure)
            return response
        roles = {role_of(settings, _bearer(request)), role_of(settings, request.cookies.get(TOKEN_COOKIE))}
        role = OPERATOR if OPERATOR in roles else CAMERA if CAMERA in roles else None
        if role is None:
            raise ApiError(
                401,
                "a token is required: open /?token=TOKEN once in the browser, or send Authorization: Bearer TOKEN",
                headers={"WWW-Authenticate": 'Bearer realm="emostream"'},
            )
        if operator_only(request.path) and role != OPERATOR:
            raise ApiError(
                403,
                "operator rights needed: send the operator token (EMOSTREAM_ADMIN_TOKEN)"
                if settings.admin_token
                else "operator routes are closed: set EMOSTREAM_ADMIN_TOKEN on the gateway",
            )
        request[ROLE] = role
        return await handler(request)

    return check_access


def check_stream_key(request: web.Request, key: str) -> None:
    """A camera user acts on a stream only with its key (``X-Stream-Key``, from the offer's answer)."""
    if request.get(ROLE) == OPERATOR:
        return
    if not _matches(request.headers.get("X-Stream-Key"), key.encode()):
        raise ApiError(403, "this stream's key is required (X-Stream-Key, from the offer's answer)")


def cors_origins(settings: Settings) -> frozenset[str]:
    """The origins allowed to call the API from other sites (``EMOSTREAM_CORS_ORIGINS``)."""
    return frozenset(origin.strip() for origin in settings.cors_origins.split(",") if origin.strip())


def cors_middleware(settings: Settings):
    """CORS headers for the origins in ``settings.cors_origins`` only; preflight requests answered here."""
    origins = cors_origins(settings)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        if origin not in origins:
            return await handler(request)
        allowed = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            preflight = {"Access-Control-Allow-Methods": CORS_METHODS, "Access-Control-Allow-Headers": CORS_HEADERS}
            return web.Response(status=204, headers={**allowed, **preflight, "Access-Control-Max-Age": "600"})
        response = await handler(request)
        response.headers.update(allowed | {"Access-Control-Expose-Headers": "Retry-After"})  # 429 and 503 say when
        return response

    return cors
