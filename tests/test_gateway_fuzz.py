"""Malformed input against every operation of the gateway's own OpenAPI document (gateway.openapi), on a
real gateway process and Redis: hypothesis makes the paths, headers and bodies; no answer is a 5xx, every
answer is JSON or the document's media type, and the process stays alive.
"""

import http.client
import json
import string
import urllib.parse
import urllib.request

import pytest
from gateway_helpers import GatewayProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from emostream.config import Settings
from emostream.redis_server import RedisServer
from gateway.app import create_app
from gateway.openapi import document

DOCUMENT = json.loads(json.dumps(document()))  # as served: JSON types only
OPERATIONS = [(path, method.upper()) for path, item in DOCUMENT["paths"].items() for method in item]
TOKEN = "fuzz-token"
EXAMPLES = 40

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)


def resolve(schema: dict) -> dict:
    """A schema, or the component it refers to."""
    ref = schema.get("$ref", "")
    return DOCUMENT["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


@st.composite
def bodies(draw, operation: dict) -> bytes:
    """A body for ``operation``: JSON shaped like its schema with wrong values, any JSON, or any bytes."""
    schema = resolve(operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}))
    fields = list(schema.get("properties", {}))
    shaped = st.fixed_dictionaries({}, optional={name: json_values for name in fields})
    choice = draw(st.sampled_from(["shaped", "json", "bytes", "empty"]))
    if choice == "shaped":
        return json.dumps(draw(shaped)).encode()
    if choice == "json":
        return json.dumps(draw(json_values)).encode()
    if choice == "bytes":
        return draw(st.binary(max_size=300))
    return b""


segments = st.text(min_size=1, max_size=30).map(lambda text: urllib.parse.quote(text, safe=""))
header_values = st.text(alphabet=string.printable.strip("\r\n\x0b\x0c") + " ", max_size=60)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    store = tmp_path_factory.mktemp("fuzz") / "store"
    with RedisServer() as server:
        env = {
            "EMOSTREAM_TOKEN": TOKEN,
            "EMOSTREAM_OFFER_RATE": "0",  # the rate limit is tested elsewhere; here every offer is parsed
            "EMOSTREAM_MODEL_STORE": str(store),
            "EMOSTREAM_KEY_PREFIX": "fuzz",
        }
        with GatewayProcess(server.url, **env) as process:
            yield process
        assert process.process.returncode == 0, "the gateway stops cleanly after the fuzzing"


def request(port: int, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Content-Type", "")
    finally:
        connection.close()


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_no_malformed_request_gets_a_server_error(gateway, path, method):
    operation = DOCUMENT["paths"][path][method.lower()]
    path_params = {p["name"]: segments for p in operation.get("parameters", []) if p["in"] == "path"}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        params=st.fixed_dictionaries(path_params),
        query=st.dictionaries(st.sampled_from(["token", "autostart", "x"]), st.text(max_size=20), max_size=2),
        body=bodies(operation),
        authorization=st.one_of(st.just(f"Bearer {TOKEN}"), st.just(f"bearer  {TOKEN} "), header_values),
        content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]),
    )
    def fuzz(params, query, body, authorization, content_type):
        url = path.format(**params) if params else path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Authorization": authorization, "Content-Type": content_type}
        if method in ("GET", "DELETE") and body[:1] != b"{":
            body = b""
        status, media = request(gateway.port, method, url, body, headers)
        assert status < 500, (method, url, body[:100], status)
        if status >= 400:
            assert media.startswith("application/json"), (method, url, status, media)
        assert gateway.process.poll() is None, "the gateway is alive"

    fuzz()


def test_the_document_describes_every_route_and_is_served(gateway):
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))  # built, not started: its routes only
    routes = {
        (route.resource.canonical, route.method)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with urllib.request.urlopen(urllib.request.Request(f"{gateway.url}/api/openapi.json", headers=headers)) as answer:
        served = json.load(answer)
    assert served == DOCUMENT and DOCUMENT["openapi"].startswith("3.")
    assert routes == set(OPERATIONS), "gateway.openapi lists exactly the gateway's routes"


def references(node: object) -> list[str]:
    """Every ``$ref`` in a JSON value."""
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [ref for value in node.values() for ref in references(value)]
    return [ref for value in node for ref in references(value)] if isinstance(node, list) else []


def test_every_schema_is_valid_json_schema_and_every_reference_resolves():
    for schema in DOCUMENT["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for ref in references(DOCUMENT):
        _, components, kind, name = ref.split("/")
        assert components == "components" and name in DOCUMENT["components"][kind], ref
