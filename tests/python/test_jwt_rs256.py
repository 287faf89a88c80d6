"""RS256 JWTs from a foreign issuer (PyJWT and cryptography), checked by the real gateway
binary against the keys of AUTH_JWT_JWKS_FILE, which it re-reads when the file changes:
a rotated key is accepted within seconds and the retired one refused, with no restart."""
import json
import os
import time
import urllib.error
import urllib.request

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from hub import drop_database, free_port, http_ok, start, stop_all, wait_for


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks(*keys):
    entries = []
    for kid, private in keys:
        entry = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
        entry.update({"kid": kid, "alg": "RS256", "use": "sig"})
        entries.append(entry)
    return json.dumps({"keys": entries})


def token(kid, private, roles, audience="hub"):
    claims = {"sub": "svc-reporting", "aud": audience, "exp": int(time.time()) + 600, "roles": roles}
    return jwt.encode(claims, private, algorithm="RS256", headers={"kid": kid})


def query(port, bearer, document="{ customers(first: 1) { totalCount } }"):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": document}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def gateway(tmp_path):
    database = f"hub_jwt_{os.getpid()}_{time.time_ns()}"
    processes = []
    jwks_file = tmp_path / "jwks.json"
    first = new_key()
    jwks_file.write_text(jwks(("k1", first)))
    port = free_port()
    start(processes, ["gateway"], database, GATEWAY_ADDR=f"127.0.0.1:{port}",
          AUTH_JWT_JWKS_FILE=str(jwks_file), AUTH_JWT_AUDIENCE="hub", AUTH_ANONYMOUS_ROLES="none")
    wait_for("the gateway", lambda: http_ok(f"http://127.0.0.1:{port}/healthz"))
    yield port, jwks_file, first
    stop_all(processes)
    drop_database(database)


def test_rs256_tokens_from_a_foreign_issuer_carry_their_roles(gateway):
    port, _, first = gateway
    status, body = query(port, token("k1", first, ["read"]))
    assert status == 200 and "totalCount" in body["data"]["customers"], body
    status, body = query(port, token("k1", first, ["read"]), "mutation { retryFailedEvents }")
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
    status, body = query(port, token("k1", first, ["read"], audience="someone-else"))
    assert status == 401 and "audience" in body["errors"][0]["message"], body
    status, body = query(port, token("k1", new_key(), ["read"]))
    assert status == 401 and "signature" in body["errors"][0]["message"], body
    # The RSA public key used as an HMAC secret (the classic confusion) is refused.
    status, body = query(port, jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "k1", algorithm="HS256"))
    assert status == 401 and "HS256" in body["errors"][0]["message"], body


def test_a_rotated_jwks_file_is_read_again_without_a_restart(gateway):
    port, jwks_file, first = gateway
    second = new_key()
    assert query(port, token("k2", second, ["read"]))[0] == 401
    jwks_file.write_text(jwks(("k2", second)))
    wait_for("the rotated key", lambda: query(port, token("k2", second, ["read"]))[0] == 200, seconds=10)
    status, body = query(port, token("k1", first, ["read"]))
    assert status == 401 and "kid" in body["errors"][0]["message"], body
    # A broken file keeps the keys already read.
    jwks_file.write_text("{not json")
    time.sleep(1.5)
    assert query(port, token("k2", second, ["read"]))[0] == 200
