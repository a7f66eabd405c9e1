"""The JSON API of CONTRACT.md through Flask's test client."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca_server.pki.serials import serial_colon

from .checks import well_inside_a_minute
from .conftest import csrf_token
from .factories import der, make_csr, pem, with_broken_signature
from .test_policy import weak_key


def post_csr(api, csr_pem, **fields):
    return api.post("/api/v1/certificates", json={"csr": csr_pem, **fields})


def test_issue_via_json_returns_201_and_the_certificate_json(api, svc):
    csr = make_csr(["cucm1.example.test", "cucm-pub.example.test"])
    response = post_csr(api, pem(csr), profile="server", validity_days=30, notify=["ops@example.test"])
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    expected_keys = {"serial", "subject", "issuer", "common_name", "sans", "not_before", "not_after", "status",
                     "profile", "fingerprint_sha256", "certificate", "chain", "notify"}
    assert expected_keys <= set(body)
    assert body["sans"] == ["DNS:cucm1.example.test", "DNS:cucm-pub.example.test"]
    assert body["status"] == "valid" and body["profile"] == "server"
    assert body["notify"] == ["ops@example.test"]
    assert body["common_name"] == "cucm1.example.test"
    assert body["not_after"].endswith("Z")
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert format(cert.serial_number, "x") == body["serial"]
    chain = x509.load_pem_x509_certificates(body["chain"].encode())
    assert [c.subject for c in chain] == [cert.subject, svc.authority.intermediate.subject]
    assert response.headers["Location"].endswith(f"/api/v1/certificates/{body['serial']}")
    nb = dt.datetime.fromisoformat(body["not_before"].replace("Z", "+00:00"))
    na = dt.datetime.fromisoformat(body["not_after"].replace("Z", "+00:00"))
    assert (na - nb).days == 30


@pytest.mark.parametrize("body_format", ["pem", "der"])
def test_issue_via_raw_pkcs10_body(api, body_format):
    csr = make_csr(["raw.example.test"])
    data = pem(csr).encode() if body_format == "pem" else der(csr)
    response = api.post("/api/v1/certificates?profile=client&validity_days=10", data=data,
                        headers={"Content-Type": "application/pkcs10"})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["profile"] == "client"


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
@pytest.mark.parametrize("body_format", ["pem", "one-line pem", "der", "utf-16 pem"])
def test_a_csr_body_without_its_type_is_taken_as_the_csr(api, content_type, body_format):
    """`curl --data-binary @x.csr` sends the form type, `curl -d @x.csr` also drops the newlines, and
    some clients name no type: the body is still the CSR."""
    csr = make_csr(["untyped.example.test"])
    data = {"pem": pem(csr).encode(), "one-line pem": pem(csr).replace("\n", "").encode(), "der": der(csr),
            "utf-16 pem": pem(csr).encode("utf-16")}[body_format]
    headers = {"Content-Type": content_type} if content_type else {}
    response = api.post("/api/v1/certificates?validity_days=10", data=data, headers=headers)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["sans"] == ["DNS:untyped.example.test"]
    assert response.get_json()["days_left"] == 10


def test_a_form_body_that_is_not_a_csr_is_refused_as_not_a_csr(api):
    response = api.post("/api/v1/certificates", data={"csr": "x"})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "csr_invalid" and "not a certificate request" in error["message"]
    typed = api.post("/api/v1/certificates", data=b"{}", headers={"Content-Type": "image/png"})
    assert "application/pkcs10" in typed.get_json()["error"]["message"]  # a type that is neither: say which


def test_two_csrs_in_one_paste_are_refused_not_half_signed(api, web):
    """Two CSRs pasted or uploaded together got one certificate, for the first, without a word
    about the second: the person who sent two wanted two. Refused with the count, in the API and
    on the form; nothing is stored."""
    from .conftest import csrf_token

    two = pem(make_csr(["first.example.test"])) + pem(make_csr(["second.example.test"])).replace(
        "CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")
    refused = api.post("/api/v1/certificates", json={"csr": two})
    assert refused.status_code == 400, refused.get_json()
    assert refused.get_json()["error"]["code"] == "csr_invalid"
    assert "holds 2 certificate requests" in refused.get_json()["error"]["message"]
    raw = api.post("/api/v1/certificates", data=two.encode(), headers={"Content-Type": "application/pkcs10"})
    assert raw.status_code == 400 and "holds 2" in raw.get_json()["error"]["message"]
    page = web.get("/certificates/new")
    form = web.post("/certificates/new", data={"csrf_token": csrf_token(page.get_data(as_text=True)), "csr": two,
                                               "profile": "server"})
    assert form.status_code == 400 and "holds 2 certificate requests" in form.get_data(as_text=True)
    assert api.get("/api/v1/certificates").get_json()["certificates"] == []


@pytest.mark.parametrize(
    "csr_factory, code",
    [
        (lambda: pem(make_csr(["*.example.test"])), "wildcard_not_allowed"),
        (lambda: pem(make_csr(["bad_name.example.test"])), "dns_name_invalid"),
        (lambda: pem(make_csr(["a.example.test"], emails=["x@example.test"])), "san_type_not_allowed"),
        (lambda: pem(make_csr([], cn="No Host Here")), "no_names"),
        (lambda: __import__("base64").b64encode(with_broken_signature(make_csr(["a.example.test"]))).decode(),
         "csr_signature_invalid"),
        (lambda: pem(make_csr(["a.example.test"], key=weak_key("roca"))), "key_weak"),
    ],
    ids=["wildcard", "dns-syntax", "email-san", "no-names", "bad-signature", "roca-key"],
)
def test_policy_refusals_are_422_with_code_and_sentence(api, csr_factory, code):
    response = post_csr(api, csr_factory())
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == code
    assert len(error["message"]) > 20
    assert [v["code"] for v in error["violations"]] == [code]


def test_wildcard_refusal_says_wildcards_are_not_allowed(api):
    error = post_csr(api, pem(make_csr(["*.example.test"]))).get_json()["error"]
    assert "wildcards are not allowed" in error["message"].lower()


def test_all_violations_are_reported_together(make_app, svc):
    app = make_app(policy={"allowed_domains": ["example.test"], "allow_ip_sans": False})
    from .conftest import ApiClient, new_token

    client = ApiClient(app.test_client(), new_token(app.extensions["ca_server"], "t2"))
    csr = make_csr(["*.example.test", "a.other.test"], ips=["10.0.0.1"])
    error = post_csr(client, pem(csr)).get_json()["error"]
    assert {v["code"] for v in error["violations"]} == {"wildcard_not_allowed", "domain_not_allowed",
                                                        "ip_san_not_allowed"}


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"csr": "hello"}, 400, "csr_invalid"),
        ({"csr": ""}, 400, "csr_missing"),
        ({}, 400, "csr_missing"),
        ({"csr": 5}, 400, "csr_missing"),
        ({"csr": "x", "validity": 5}, 400, "field_unknown"),
        ({"csr": "x", "validity_days": "many"}, 400, "validity_invalid"),
        ({"csr": "x", "validity_days": 1.5}, 400, "validity_invalid"),
        ({"csr": "x", "notify": [1]}, 400, "notify_invalid"),
        ({"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"}, 400, "csr_invalid"),
    ],
)
def test_bad_input_is_400_with_words(api, body, status, code):
    response = api.post("/api/v1/certificates", json=body)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


def test_semantic_field_errors(api):
    csr = pem(make_csr(["a.example.test"]))
    assert post_csr(api, csr, profile="nope").get_json()["error"]["code"] == "profile_unknown"
    assert post_csr(api, csr, validity_days=0).get_json()["error"]["code"] == "validity_invalid"
    assert post_csr(api, csr, validity_days=5000).status_code == 422
    assert post_csr(api, csr, notify=["not-an-address"]).get_json()["error"]["code"] == "notify_invalid"


def test_not_json_and_wrong_type_are_4xx(api):
    r1 = api.post("/api/v1/certificates", data="{not json", headers={"Content-Type": "application/json"})
    assert r1.status_code == 400 and r1.get_json()["error"]["code"] == "json_invalid"
    r2 = api.post("/api/v1/certificates", json=["a"])
    assert r2.status_code == 400
    r3 = api.post("/api/v1/certificates", data=b"abc", headers={"Content-Type": "image/png"})
    assert r3.status_code == 400 and "application/pkcs10" in r3.get_json()["error"]["message"]


def test_oversized_body_is_413(make_app):
    app = make_app(server={"max_request_bytes": 10_000})
    from .conftest import ApiClient, new_token

    client = ApiClient(app.test_client(), new_token(app.extensions["ca_server"], "t3"))
    response = client.post("/api/v1/certificates", json={"csr": "A" * 20_000})
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"


def test_oversized_csr_is_413(api):
    response = post_csr(api, "-----BEGIN CERTIFICATE REQUEST-----\n" + "A" * 70_000)
    assert response.status_code == 413


def test_lookup_accepts_lower_upper_and_colon_forms(api):
    serial = post_csr(api, pem(make_csr(["look.example.test"]))).get_json()["serial"]
    for form in (serial, serial.upper(), serial_colon(int(serial, 16)), serial_colon(int(serial, 16)).lower()):
        response = api.get(f"/api/v1/certificates/{form}")
        assert response.status_code == 200, form
        assert response.get_json()["serial"] == serial


@pytest.mark.parametrize("serial", ["0123456789abcdef", "zz-not-hex", "0"])
def test_unknown_serial_is_404_error_json(api, serial):
    response = api.get(f"/api/v1/certificates/{serial}")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] in ("not_found", "serial_invalid")



def test_a_fingerprint_looked_up_as_a_serial_is_named(api):
    body = post_csr(api, pem(make_csr(["fpl.example.test"]))).get_json()
    fingerprint = body["fingerprint_sha256"]
    for form in (fingerprint, ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()):
        response = api.get(f"/api/v1/certificates/{form}")
        assert 400 <= response.status_code < 500
        message = response.get_json()["error"]["message"]
        assert "is a SHA-256 fingerprint, not a serial number" in message and "/inspect" in message, message

def test_the_cas_own_serials_are_named_when_looked_up_as_leaves(api, svc):
    """The intermediate's or the root's serial (copied from a chain) was "No certificate with serial
    ... was issued by this CA": true, and no help. Lookup and revocation say which it is."""
    intermediate = format(svc.authority.intermediates[-1].cert.serial_number, "x")
    root = format(svc.authority.root.serial_number, "x")
    looked = api.get(f"/api/v1/certificates/{intermediate}")
    assert looked.status_code == 404
    assert "is this CA's intermediate certificate, generation 1" in looked.get_json()["error"]["message"]
    assert "revoke-intermediate" in looked.get_json()["error"]["message"]
    revoked = api.post(f"/api/v1/certificates/{root}/revoke", json={"reason": "keyCompromise"})
    assert revoked.status_code == 404 and "is this CA's root certificate" in revoked.get_json()["error"]["message"]


def test_list_newest_first_with_next_link(api):
    serials = [post_csr(api, pem(make_csr([f"l{i}.example.test"]))).get_json()["serial"] for i in range(5)]
    page = api.get("/api/v1/certificates?limit=2").get_json()
    assert [c["serial"] for c in page["certificates"]] == serials[::-1][:2]
    seen = [c["serial"] for c in page["certificates"]]
    url = page["next"]
    while url:
        page = api.get(url).get_json()
        seen += [c["serial"] for c in page["certificates"]]
        url = page["next"]
    assert seen == serials[::-1]


def test_list_filters(api, svc):
    a = post_csr(api, pem(make_csr(["alpha.example.test"])), validity_days=10).get_json()["serial"]
    b = post_csr(api, pem(make_csr(["beta.example.test"])), validity_days=200).get_json()["serial"]
    soon = api.get("/api/v1/certificates?expiring_within_days=30").get_json()["certificates"]
    assert [c["serial"] for c in soon] == [a]
    found = api.get("/api/v1/certificates?q=beta").get_json()["certificates"]
    assert [c["serial"] for c in found] == [b]
    found = api.get("/api/v1/certificates?q=example.test").get_json()["certificates"]
    assert {c["serial"] for c in found} == {a, b}
    found = api.get(f"/api/v1/certificates?q={b[:10].upper()}").get_json()["certificates"]
    assert [c["serial"] for c in found] == [b]
    assert api.get("/api/v1/certificates?status=valid").get_json()["certificates"]
    assert api.get("/api/v1/certificates?status=revoked").get_json()["certificates"] == []
    assert api.get("/api/v1/certificates?status=bogus").status_code == 400
    zero = api.get("/api/v1/certificates?limit=0")
    assert zero.status_code == 400 and zero.get_json()["error"]["message"] == "limit must be 1 or more."  # not "and 2147483648"
    assert api.get("/api/v1/certificates?limit=1000").status_code == 200
    assert api.get("/api/v1/certificates?limit=5000").status_code == 200  # served as 1000
    assert api.get("/api/v1/certificates?limit=many").status_code == 400


def test_ca_hierarchy_json(api, svc):
    body = api.get("/api/v1/ca").get_json()
    assert set(body) >= {"root", "intermediate"}
    for role in ("root", "intermediate"):
        entry = body[role]
        assert {"subject", "serial", "not_before", "not_after", "fingerprint_sha256", "pem"} <= set(entry)
        cert = x509.load_pem_x509_certificate(entry["pem"].encode())
        assert format(cert.serial_number, "x") == entry["serial"]


def test_api_needs_a_token(app):
    client = app.test_client()
    response = client.post("/api/v1/certificates", json={"csr": pem(make_csr(["a.example.test"]))})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    wrong = client.get("/api/v1/certificates", headers={"Authorization": "Bearer cas_wrong"})
    assert wrong.status_code == 401


def _all_pages(api, q, **params):
    """Every serial a search lists, following `next` (pages of 2)."""
    url, out = f"/api/v1/certificates?q={q}&limit=2" + "".join(f"&{k}={v}" for k, v in params.items()), []
    while url:
        body = api.get(url).get_json()
        out += [c["serial"] for c in body["certificates"]]
        url = body["next"]
    return out


@pytest.mark.parametrize(("scan_rows", "key_rows_max"), [(10_000, 200_000), (2, 200_000), (1, 200_000), (1, 1)])
def test_broad_searches_give_the_same_results(api, monkeypatch, scan_rows, key_rows_max):
    """Past SEARCH_SET_CAP matches the store scans the newest SEARCH_SCAN_ROWS with a text match,
    then reads the search keys newest first (or, past SEARCH_KEY_ROWS_MAX matching key rows, goes on
    with the text scan); same answers, same order, same pages."""
    from ca_server.store import listing

    serials = [post_csr(api, pem(make_csr([f"wide{i}.example.test"]))).get_json()["serial"] for i in range(5)]
    other = post_csr(api, pem(make_csr(["elsewhere.other.test"]))).get_json()["serial"]
    newest = post_csr(api, pem(make_csr(["last.other.test"]))).get_json()["serial"]
    assert api.post(f"/api/v1/certificates/{serials[1]}/revoke", json={"reason": "superseded"}).status_code == 200
    queries = ("wide", "example.test", serials[0][:12], "WIDE2", "test", "other")
    narrow = {q: _all_pages(api, q) for q in queries}
    revoked = _all_pages(api, "wide", status="revoked")
    monkeypatch.setattr(listing, "SEARCH_SET_CAP", 1)
    monkeypatch.setattr(listing, "SCAN_ROWS", scan_rows)
    monkeypatch.setattr(listing, "SEARCH_KEY_WINDOW", 1)  # several windows
    monkeypatch.setattr(listing, "SEARCH_KEY_ROWS_MAX", key_rows_max)  # 1: the text scan goes on
    for q, expected in narrow.items():
        assert _all_pages(api, q) == expected, q
    assert _all_pages(api, "wide", status="revoked") == revoked == [serials[1]]
    assert narrow["wide"] == serials[::-1] and other not in narrow["example.test"]
    assert narrow["WIDE2"] == [serials[2]]
    assert narrow["other"] == [newest, other]
    assert narrow["test"] == [newest, other, *serials[::-1]]


# Certificates for the filtered-list test: name, issued days ago, validity days, owner, revoked.
_FILTER_SPEC = [
    ("old0.example.test", 400, 30, "admin", False),
    ("old1.example.test", 200, 100, "ops", False),
    ("keep0.example.test", 0, 365, "admin", False),
    ("soon0.example.test", 0, 10, "ops", False),
    ("gone0.example.test", 0, 365, "ops", True),
    ("soon1.other.test", 0, 20, "admin", False),
    ("keep1.example.test", 0, 365, "ops", False),
    ("old2.other.test", 500, 30, "admin", True),
]
_LIST_PATHS = {  # listing settings: each sends the filters down another way
    "defaults": {},
    "scan": {"SCAN_ROWS": 1, "CANDIDATES_MAX": 0, "SEARCH_SET_CAP": 1},
    "index": {"SCAN_ROWS": 1, "CANDIDATES_MAX": 1000, "PROBE_ROWS": 1, "SEARCH_SET_CAP": 1},
    "requester-floor": {"SCAN_ROWS": 2, "CANDIDATES_MAX": 1, "SEARCH_SET_CAP": 1, "SEARCH_KEY_WINDOW": 1},
}


@pytest.mark.parametrize("path", list(_LIST_PATHS))
def test_filtered_lists_give_every_match_newest_first(app, svc, api, monkeypatch, path):
    """status, expiring_within_days, q and the requester (a non-admin token sees only its own)
    combined, through each way the store finds rows (newest rows, a filter's index, search keys):
    every page follows from the certificates' own dates, revocations and owners."""
    from ca_server import issuance, revocation
    from ca_server.clock import utcnow
    from ca_server.store import listing

    from .conftest import ApiClient, new_token

    now = utcnow()
    ops = ApiClient(app.test_client(), new_token(svc, "ops", admin=False, domains=("example.test",)))
    owners = {"admin": issuance.CLI_REQUESTER,
              "ops": issuance.Requester(name="ops", kind="token", is_admin=False, domains=("example.test",))}
    made = []
    for name, ago, days, owner, revoked in _FILTER_SPEC:
        issued = now - dt.timedelta(days=ago)
        request = issuance.IssueRequest(csr=pem(make_csr([name])), validity_days=days, requester=owners[owner])
        record = issuance.issue(svc.config, svc.store, svc.authority, request, issued)
        if revoked:
            revocation.revoke(svc.config, svc.store, svc.authority, record.serial, "superseded", now, actor="test")
        made.append((record.serial, name, issued + dt.timedelta(days=days), owner, revoked))
    for setting, value in _LIST_PATHS[path].items():
        monkeypatch.setattr(listing, setting, value)

    def expected(owner, q, status, expiring):
        out = []
        for serial, name, not_after, by, revoked in reversed(made):
            expired = not revoked and not_after <= now
            state = "revoked" if revoked else "expired" if expired else "valid"
            if ((owner == "admin" or by == owner) and (q is None or any(label.startswith(q) for label in name.split(".")))
                    and status in (None, state)
                    and (expiring is None or (state == "valid" and not_after <= now + dt.timedelta(days=expiring)))):
                out.append(serial)
        return out

    for owner, client in (("admin", api), ("ops", ops)):
        for q in (None, "example", "old", "soon"):
            for status in (None, "valid", "revoked", "expired"):
                for expiring in (None, 30):
                    params = {k: v for k, v in (("q", q), ("status", status), ("expiring_within_days", expiring)) if v}
                    url = "/api/v1/certificates?limit=2" + "".join(f"&{k}={v}" for k, v in params.items())
                    found = []
                    while url:
                        body = client.get(url).get_json()
                        found += [c["serial"] for c in body["certificates"]]
                        url = body["next"]
                    assert found == expected(owner, q, status, expiring), (owner, params)
    assert expected("admin", None, "expired", None) == [made[1][0], made[0][0]]  # the spec means what it says
    assert expected("ops", None, None, 30) == [made[3][0]]


def test_search_finds_a_name_by_any_of_its_labels(api):
    serial = post_csr(api, pem(make_csr(["cucm1.corp.example.test"]))).get_json()["serial"]
    other = post_csr(api, pem(make_csr(["web.other.test"]))).get_json()["serial"]
    for q in ("cucm1", "CUCM", "corp", "corp.example", "example.test", "cucm1.corp.example.test"):
        found = [c["serial"] for c in api.get(f"/api/v1/certificates?q={q}").get_json()["certificates"]]
        assert found == [serial], q
    assert [c["serial"] for c in api.get("/api/v1/certificates?q=test").get_json()["certificates"]] == [other, serial]
    assert api.get("/api/v1/certificates?q=orp").get_json()["certificates"] == []  # not mid-label


@pytest.mark.sqlite_only
def test_migration_rebuilds_the_search_index_of_existing_certificates(api, svc):
    """Certificates stored before m007 are found by label after the upgrade."""
    serial = post_csr(api, pem(make_csr(["old.migrated.test"]))).get_json()["serial"]
    from ca_server.store.schema import m007_search_by_label

    db = svc.store.db
    db.execute("DROP TABLE certificate_search")
    db.execute("CREATE TABLE certificate_names (name TEXT)")
    m007_search_by_label(db)
    found = [c["serial"] for c in api.get("/api/v1/certificates?q=migrated").get_json()["certificates"]]
    assert found == [serial]


@pytest.mark.sqlite_only
def test_m009_keeps_every_search_key_and_stores_them_in_issue_order(api, svc):
    """m009 rebuilds the m007 search table (ordered by key, serial) as key rows in issue order."""
    serials = [post_csr(api, pem(make_csr([f"m9-{i}.example.test"]))).get_json()["serial"] for i in range(3)]
    from ca_server.store.schema import m007_search_by_label, m009_search_keys_in_insert_order

    db = svc.store.db
    db.execute("DROP TABLE certificate_search")
    db.execute("CREATE TABLE certificate_names (name TEXT)")
    m007_search_by_label(db)
    before = sorted(db.conn.execute("SELECT key, serial FROM certificate_search").fetchall())
    m009_search_keys_in_insert_order(db)
    rows = db.conn.execute("SELECT key, serial FROM certificate_search ORDER BY rowid").fetchall()
    assert sorted(rows) == before
    assert list(dict.fromkeys(serial for _, serial in rows)) == serials  # issue order
    assert {r[1] for r in db.conn.execute("PRAGMA index_list(certificate_search)")} == {"certificate_search_key"}
    found = [c["serial"] for c in api.get("/api/v1/certificates?q=example.test").get_json()["certificates"]]
    assert found == serials[::-1]


# Token submissions with a JSON body are answered by web/hot_paths.py, not by the Flask view; a raw
# application/pkcs10 body still goes through Flask. Both must answer the same way.
def _same_shape(fast, flask_):
    ignored = {"Content-Length", "Date", "Server"}
    assert fast.status_code == flask_.status_code, (fast.get_json(), flask_.get_json())
    assert {k for k in fast.headers.keys() if k not in ignored} == {k for k in flask_.headers.keys() if k not in ignored}
    assert fast.headers["Content-Type"] == flask_.headers["Content-Type"] == "application/json"
    assert fast.get_data().endswith(b"\n") and flask_.get_data().endswith(b"\n")


def test_the_json_fast_path_answers_like_the_flask_view(api, svc):
    fast = post_csr(api, pem(make_csr(["fast.example.test"])), validity_days=30)
    slow = api.post("/api/v1/certificates?validity_days=30", data=pem(make_csr(["slow.example.test"])),
                    headers={"Content-Type": "application/pkcs10"})
    _same_shape(fast, slow)
    assert fast.status_code == 201
    a, b = fast.get_json(), slow.get_json()
    assert set(a) == set(b)
    assert fast.headers["Location"] == f"/api/v1/certificates/{a['serial']}"
    assert slow.headers["Location"] == f"/api/v1/certificates/{b['serial']}"
    assert svc.store.get_certificate(a["serial"]) is not None  # stored before it was returned
    for name in ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"):
        assert fast.headers[name] == slow.headers[name]


def test_over_https_the_json_fast_path_carries_hsts_like_the_flask_view(api):
    """Found in review (issue 29): the fast path added the security headers but not HSTS, which
    Flask adds to every answer over https; both now come from one list (HotPaths.site_headers)."""
    https = {"base_url": "https://localhost"}
    fast = api.post("/api/v1/certificates", json={"csr": pem(make_csr(["tls-fast.example.test"]))}, **https)
    slow = api.post("/api/v1/certificates", data=pem(make_csr(["tls-slow.example.test"])),
                    headers={"Content-Type": "application/pkcs10"}, **https)
    _same_shape(fast, slow)
    assert fast.status_code == 201
    assert fast.headers["Strict-Transport-Security"] == slow.headers["Strict-Transport-Security"]


@pytest.mark.parametrize("token", ["cas_unknown", ""])
def test_the_json_fast_path_refuses_a_bad_token_like_the_flask_view(app, token):
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    fast = client.post("/api/v1/certificates", json={"csr": pem(make_csr(["a.example.test"]))}, headers=headers)
    slow = client.post("/api/v1/certificates", data=pem(make_csr(["a.example.test"])),
                       headers={**headers, "Content-Type": "application/pkcs10"})
    _same_shape(fast, slow)
    assert fast.status_code == 401
    assert fast.get_json() == slow.get_json()


def test_the_json_fast_path_refuses_by_policy_like_the_flask_view(api, svc):
    wildcard = pem(make_csr(["*.example.test"]))
    fast = post_csr(api, wildcard)
    slow = api.post("/api/v1/certificates", data=wildcard, headers={"Content-Type": "application/pkcs10"})
    _same_shape(fast, slow)
    assert fast.status_code == 422
    assert fast.get_json() == slow.get_json()
    assert [v["code"] for v in fast.get_json()["error"]["violations"]] == ["wildcard_not_allowed"]
    refusals = svc.store.audit_entries(action="refuse")
    assert len(refusals) == 2  # one audit row each, not two for the fast one


def test_the_json_fast_path_rate_limits_like_the_flask_view(make_app):
    from .conftest import ApiClient, new_token

    app = make_app(server={"submission_rate_limit": "2 per minute"})
    client = ApiClient(app.test_client(), new_token(app.extensions["ca_server"], "limited"))
    well_inside_a_minute()
    codes = [post_csr(client, pem(make_csr([f"r{i}.example.test"]))).status_code for i in range(3)]
    assert codes == [201, 201, 429]
    fast = post_csr(client, pem(make_csr(["r9.example.test"])))
    slow = client.post("/api/v1/certificates", data=pem(make_csr(["r9.example.test"])),
                       headers={"Content-Type": "application/pkcs10"})
    _same_shape(fast, slow)
    assert fast.get_json()["error"]["code"] == slow.get_json()["error"]["code"] == "rate_limited"
    assert int(fast.headers["Retry-After"]) >= 1


def test_json_nested_too_deep_is_400_not_500(api, web):
    body = "[" * 100_000 + "]" * 100_000
    fast = api.post("/api/v1/certificates", data=body, headers={"Content-Type": "application/json"})
    # A signed-in browser session (with its CSRF token) goes through the Flask view.
    token = csrf_token(web.get("/certificates/new").get_data(as_text=True))
    slow = web.post("/api/v1/certificates", data=body, headers={"Content-Type": "application/json",
                                                                 "X-CSRFToken": token})
    for response in (fast, slow):
        assert response.status_code == 400
        assert response.get_json()["error"]["code"] == "json_invalid"
    serial = post_csr(api, pem(make_csr(["deep.example.test"]))).get_json()["serial"]
    for url in (f"/api/v1/certificates/{serial}/revoke", "/api/v1/inspect", "/api/v1/requests/x/reject"):
        response = api.post(url, data=body, headers={"Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (url, response.status_code)


def test_what_curl_data_binary_sends_gets_words_about_what_it_is(api, svc):
    """`curl --data-binary @file` names the body a form; whatever the file holds, the answer says
    what it is instead of asking for another content type."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    cert = api.post("/api/v1/certificates", json={"csr": pem(make_csr(["curl.example.test"]))}).get_json()
    for body, words in ((cert["certificate"].encode(), "This is a certificate, not a certificate request"),
                        (b"hello, this is not a CSR", "not a certificate request"),
                        (b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n", "private key")):
        answer = api.post("/api/v1/certificates", data=body, headers=form)
        assert answer.status_code == 400, answer.get_json()
        error = answer.get_json()["error"]
        assert error["code"] == "csr_invalid" and words in error["message"], error
    der_cert = x509.load_pem_x509_certificate(cert["certificate"].encode()).public_bytes(Encoding.DER)
    answer = api.post("/api/v1/certificates", data=der_cert, headers=form)
    assert answer.get_json()["error"]["message"].startswith("This is a certificate, not a certificate request")
    ok = api.post("/api/v1/certificates", data=pem(make_csr(["curl.example.test"])).encode(), headers=form)
    assert ok.status_code == 201
