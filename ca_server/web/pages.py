"""Server-rendered pages: dashboard, CSR form, list/search, detail, downloads."""

from __future__ import annotations

import datetime as dt

from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import IntegerField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.validators import NumberRange, Optional

from .. import approvals, issuance, revocation
from ..ca import rollover
from ..ca.offline_root import root_crl_warning
from ..display import algorithm_text, requester_text
from ..errors import FINGERPRINT_ADVICE, BadRequestError, CAError, PolicyViolationError, TooLargeError
from ..models import PendingRequest
from ..notify import reminders
from ..notify.mail import expiry_phrase
from ..notify.renewal_window import renewal_window
from ..pki.serials import is_sha256_fingerprint
from ..policy import EXPLANATIONS
from ..recovery import backup
from ..store import CertificateFilter
from .api import find_certificate
from .auth import admin_required
from .common import certificate_page, client_address, count_submission, now, services
from .errors import status_for

bp = Blueprint("pages", __name__)

PEM = "application/x-pem-file"
DER = "application/pkix-cert"
P7B = "application/x-pkcs7-certificates"
PAGE_SIZE = 50
UNHEARD_LISTED = 10  # certificates that notify nobody, named on the dashboard (the soonest to expire)
DASHBOARD_EXPIRING = 50  # the soonest-expiring certificates on the dashboard; the list page has the rest


class CSRForm(FlaskForm):
    csr = TextAreaField("Paste the CSR (PEM text)", render_kw={"rows": 12, "spellcheck": "false"})
    csr_file = FileField("…or upload the CSR file (.csr, .pem or .der)")
    profile = SelectField("Profile")
    validity_days = IntegerField("Validity in days", validators=[Optional(), NumberRange(min=1)])
    notify = StringField("Reminder e-mail (several separated by commas)")
    submit = SubmitField("Sign a CSR")


# Other names people and scripts use for the form's fields.
FORM_ALIASES = {"csr": ("pem", "csr_pem", "request"), "validity_days": ("days", "validity"),
                "notify": ("email", "emails", "reminder_email")}


def _form_data():
    data = request.form.copy()
    for field, aliases in FORM_ALIASES.items():
        if not data.get(field):
            alias = next((a for a in aliases if data.get(a)), None)
            if alias:
                data[field] = data[alias]
    return data


def _csr_form() -> CSRForm:
    config = services().config
    form = CSRForm(formdata=_form_data()) if request.method == "POST" else CSRForm()
    form.profile.choices = [(name, f"{name}: {p.description}" if p.description else name)
                            for name, p in config.profiles.items()]
    if not form.profile.data:
        form.profile.data = config.policy.default_profile
    form.validity_days.render_kw = {"min": 1, "max": config.policy.max_validity_days,
                                    "placeholder": str(config.policy.default_validity_days)}
    return form


@bp.get("/")
def dashboard():
    svc = services()
    moment = now()
    horizon = max(svc.config.reminders.days_before)
    mine = None if g.requester.is_admin else g.requester.label
    recent, _ = svc.store.list_certificates(CertificateFilter(requester=mine), moment, limit=10)
    expiring = svc.store.soonest_expiring(moment, horizon, requester=mine, limit=DASHBOARD_EXPIRING + 1)
    more_expiring, expiring = len(expiring) > DASHBOARD_EXPIRING, expiring[:DASHBOARD_EXPIRING]
    recent, expiring = svc.store.with_renewals(recent), svc.store.with_renewals(expiring)  # shown as "renewed"
    failed = svc.store.failed_reminders() if g.requester.is_admin else []
    # Certificates whose reminders would reach no one: no address of their own, none by default.
    unheard = (svc.store.count_without_recipients(moment)
               if g.requester.is_admin and not svc.config.reminders.default_recipients else 0)
    unheard_listed = svc.store.without_recipients(moment, UNHEARD_LISTED) if unheard else []
    root_crl = (root_crl_warning(svc.store, moment, svc.config.revocation.root_crl_warning_days)
                if svc.authority.root_offline else None)
    retiring = {r["generation"]: r for r in rollover.retirement(svc.authority, svc.store, moment)}
    ending = rollover.ending_warning(svc.authority, moment, svc.config.ca.intermediate_warning_days)
    stale_backup = backup.stale_warning(svc.config, svc.paths, svc.store, moment) if g.requester.is_admin else None
    return render_template("dashboard.html", authorities=svc.authority.describe(), recent=recent,
                           expiring=expiring, more_expiring=more_expiring, horizon=horizon,
                           failed=failed, unheard=unheard, unheard_listed=unheard_listed, root_crl=root_crl, ending=ending, retiring=retiring,
                           root_offline=svc.authority.root_offline, stale_backup=stale_backup)


@bp.route("/certificates/new", methods=["GET", "POST"])
def new_certificate():
    svc = services()
    form = _csr_form()
    if request.method == "GET":
        if not form.notify.data and g.requester is not None and g.requester.email:
            form.notify.data = g.requester.email  # the requester hears by default; the form shows it
        return render_template("new.html", form=form, policy=svc.config.policy, problems=[])
    count_submission()
    problems: list[dict] = []
    status = 400
    try:
        csr = _submitted_csr(form)
        if not form.validate():
            raise BadRequestError(" ".join(e for errs in form.errors.values() for e in errs))
        req = issuance.IssueRequest(
            csr=csr,
            profile=form.profile.data,
            validity_days=form.validity_days.data,
            notify=tuple(a for a in (form.notify.data or "").replace(";", ",").split(",") if a.strip()),
            requester=g.requester,
            client=client_address(),
            door="web",
        )
        record = issuance.issue(svc.config, svc.store, svc.authority, req, now())
        if isinstance(record, PendingRequest):
            return redirect(url_for("pages.request_page", request_id=record.id), code=303)
        for note in record.extra.get("notes", ()):
            flash(note)
        return redirect(url_for("pages.certificate", serial=record.serial), code=303)
    except PolicyViolationError as exc:
        status = 422
        problems = [{**v.as_dict(), "fix": what_to_do(v.code, v.message)} for v in exc.violations]
    except CAError as exc:
        status = status_for(exc)
        problems = [{"code": exc.code, "message": exc.message, "fix": what_to_do(exc.code, exc.message)}]
    return render_template("new.html", form=form, policy=svc.config.policy, problems=problems), status


def what_to_do(code: str, message: str) -> str:
    """The action an explanation adds to a refusal's own words, or "": its first sentence says
    again what the message already said (the form showed every refusal twice in other words)."""
    explanation = EXPLANATIONS.get(code, "")
    _what, _, action = explanation.partition(". ")
    if not action or code == "csr_invalid" or action.rstrip(".") in message:
        return ""
    return action


def _submitted_csr(form: CSRForm) -> bytes | str:
    upload = request.files.get("csr_file") or next((f for f in request.files.values() if f.filename), None)
    if upload is not None and upload.filename:
        limit = services().config.policy.max_csr_bytes
        data = upload.read(limit + 1)
        if len(data) > limit:
            raise TooLargeError(f"The uploaded file is larger than {limit} bytes; a CSR is normally 1-2 KB.")
        if not data.strip():
            raise BadRequestError("The uploaded file is empty.", code="csr_invalid")
        return data
    text = (form.csr.data or "").strip()
    if not text:
        raise BadRequestError("Paste the CSR's PEM text or choose a CSR file to upload.", code="csr_missing")
    return text


@bp.get("/certificates")
def certificate_list():
    args = request.args
    status = args.get("status") or None
    if status not in (None, "valid", "revoked", "expired"):
        status = None
    expiring = args.get("expiring_within_days", "")
    expiring_days = int(expiring) if expiring.isdigit() and len(expiring) < 6 else None
    q = (args.get("q") or "").strip()[:200] or None
    cursor = args.get("cursor", "")
    before = int(cursor) if cursor.isdigit() and len(cursor) < 19 else None
    flt = CertificateFilter(status=status, expiring_within_days=expiring_days, q=q,
                            requester=None if g.requester.is_admin else g.requester.label)
    records, next_url = certificate_page(flt, limit=PAGE_SIZE, before=before, endpoint="pages.certificate_list")
    records = services().store.with_renewals(records)  # "renewed" here as on each certificate's page
    # A fingerprint finds nothing here (names and serials only): say so, not just "no certificates".
    # The page links Inspect itself, so the path in words is left out here.
    fingerprint_advice = FINGERPRINT_ADVICE.replace(" (/inspect)", "") if q and is_sha256_fingerprint(q) else None
    return render_template("list.html", records=records, q=q or "", status=status or "",
                           expiring=expiring_days if expiring_days is not None else "", next_url=next_url,
                           fingerprint_advice=fingerprint_advice)


@bp.get("/certificates/<serial>")
def certificate(serial: str):
    record = find_certificate(serial)
    acme_window = None
    if record.requester and record.requester.startswith("acme:"):  # its client renews it; mail only if not
        acme_window = renewal_window(record.not_before, record.not_after, services().config.acme.renewal_window_percent)
    return render_template("detail.html", r=record, reasons=revocation.LEAF_REASONS, acme_window=acme_window,
                           reminders=services().store.reminders_for(record.serial), enrolled=_enrolled(record.serial),
                           recipients=reminders.recipients_for(services().config, services().store, record))


DOORS = {"web": "the web form", "api": "the JSON API", "acme": "ACME", "scep": "SCEP", "est": "EST",
         "cli": "the command line", "ca": "the CA, for its own use"}


def _enrolled(serial: str) -> str | None:
    """How the certificate came: its door, endpoint, the device protocol's details, who approved."""
    detail = reminders.issuance_detail(services().store, serial)
    if not detail.get("door"):
        return None  # issued before doors were recorded
    words = [DOORS.get(detail["door"], detail["door"])]
    if detail.get("endpoint"):
        words.append(f"{'label' if detail['door'] == 'est' else 'endpoint'} {detail['endpoint']}")
    words += [detail["operation"]] if detail.get("operation") else []
    words += [algorithm_text(detail[k]) for k in ("cipher", "digest") if detail.get(k)]
    if detail.get("renews"):
        words.append(f"renewing {detail['renews']}")
    if detail.get("approved_by"):
        words.append(f"approved by {requester_text(detail['approved_by'])}")
    return ", ".join(words)


@bp.get("/requests/<request_id>")
def request_page(request_id: str):
    pending = approvals.get_request(services().store, request_id)
    if not approvals.visible_to(pending, g.requester):
        abort(404)
    return render_template("request.html", p=pending)


@bp.post("/certificates/<serial>/revoke")
@admin_required
def revoke_certificate(serial: str):
    record = find_certificate(serial, with_renewal=False)
    svc = services()
    revocation.revoke(svc.config, svc.store, svc.authority, record.serial, request.form.get("reason", ""), now(),
                      actor=g.requester.label, client=client_address())
    flash(f"Certificate {record.serial} is revoked; the CRL and OCSP now say so.")
    return redirect(url_for("pages.certificate", serial=record.serial), code=303)


def _download(body: str | bytes, mimetype: str, filename: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _filename_base(record) -> str:
    """The download's file name: the CN in ASCII letters, digits and -._ (a header carries it; a
    CN of other letters, 服务器, would go out as raw UTF-8), else the serial."""
    base = (record.common_name or record.serial).replace("*", "wildcard")
    name = "".join(c if (c.isascii() and c.isalnum()) or c in "-._" else "_" for c in base)[:80]
    return name if any(c.isalnum() for c in name) else record.serial


@bp.get("/certificates/<serial>.pem")
def certificate_pem(serial: str):
    record = find_certificate(serial, with_renewal=False)
    return _download(record.pem, PEM, f"{_filename_base(record)}.pem")


@bp.get("/certificates/<serial>.der")
def certificate_der(serial: str):
    record = find_certificate(serial, with_renewal=False)
    return _download(record.der, DER, f"{_filename_base(record)}.der")


@bp.get("/certificates/<serial>.crt")
def certificate_crt(serial: str):
    """The same DER file under the .crt name Windows and many appliances expect."""
    record = find_certificate(serial, with_renewal=False)
    return _download(record.der, DER, f"{_filename_base(record)}.crt")


@bp.get("/certificates/<serial>/chain.pem")
def certificate_chain(serial: str):
    record = find_certificate(serial, with_renewal=False)
    return _download(record.pem + services().authority.chain_for(record.issuer), PEM,
                     f"{_filename_base(record)}-chain.pem")


@bp.get("/certificates/<serial>/chain.p7b")
def certificate_p7b(serial: str):
    """Certificate, intermediate and root as a PKCS #7 bundle (DER): what Windows' certificate import
    and IIS's "Complete Certificate Request" take in one file."""
    record = find_certificate(serial, with_renewal=False)
    authority = services().authority
    bundle = pkcs7.serialize_certificates([record.certificate, authority.by_issuer(record.issuer).cert, authority.root],
                                          Encoding.DER)
    return _download(bundle, P7B, f"{_filename_base(record)}.p7b")


@bp.get("/certificates/<serial>/fullchain.pem")
def certificate_fullchain(serial: str):
    record = find_certificate(serial, with_renewal=False)
    return _download(record.pem + services().authority.chain_for(record.issuer) + services().authority.root_pem, PEM, f"{_filename_base(record)}-fullchain.pem")


def days_left_words(not_after: dt.datetime, moment: dt.datetime) -> tuple[str, str]:
    """("expires in 12 days", "warn") for the detail page and lists; the same day count as the
    reminder mails (whole days rounded up, "today" on the day itself)."""
    left = reminders.days_left(not_after, moment)
    if left < 0:
        ago = int((moment - not_after).total_seconds() // 86400)
        return ("expired today" if ago == 0 else f"expired {ago} day{'s' if ago != 1 else ''} ago"), "bad"
    words = expiry_phrase(left)
    level = "bad" if left < 7 else "warn" if left <= 30 else "good"
    return words, level
