"""Sending mail with smtplib, and the messages ca-server sends."""

from __future__ import annotations

import html
import smtplib
import ssl
import typing
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ..config import Config, MailConfig
from ..display import moment_text
from ..errors import MailError
from ..models import CertificateRecord
from ..pki.subjects import CONTROL_CHARACTER

# What the server says of one message (its recipients, its content): the next message may go.
# Anything else (no answer, a dropped or refused connection, TLS, login) would fail every message
# of the pass the same way, each after its own timeout.
MESSAGE_REFUSALS = (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError)


def tls_context(ca_file: str) -> ssl.SSLContext:
    """A client context that trusts the system's CAs and, besides them, those in `ca_file`."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(ca_file)
    return context


def not_trusted(exc: ssl.SSLCertVerificationError, key: str, ca_file: str) -> str:
    """What to do about a server certificate `tls_context(ca_file)` did not trust."""
    return (f"TLS certificate is not trusted ({exc.verify_message}): set {key} to the CA certificate that "
            f"signed it ({ca_file or 'now: the system store only'})")


class Mailer:
    """One SMTP session, opened on the first message and reused until closed or broken. Once the
    server failed, the rest of the pass is not tried against it: a relay that accepts connections
    and never answers cost timeout_seconds per reminder (100 due reminders, 33 minutes)."""

    def __init__(self, config: MailConfig, password: str | None) -> None:
        self.config = config
        self._password = password
        self._smtp: smtplib.SMTP | None = None
        self._broken: str | None = None  # why the server failed in this pass

    def __enter__(self) -> Mailer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        context = tls_context(cfg.ca_file)
        if cfg.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout_seconds, context=context)
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_seconds)
            if cfg.security == "starttls":
                smtp.starttls(context=context)
        if cfg.username:
            if not self._password:
                smtp.close()
                raise MailError(f"mail.username is set but the password variable {cfg.password_env} is empty.")
            smtp.login(cfg.username, self._password)
        return smtp

    def send(self, message: EmailMessage) -> None:
        """Send or raise MailError with the reason in words (never the password)."""
        if self._broken is not None:
            raise MailError(f"not tried, the SMTP server failed just before: {self._broken}")
        try:
            if self._smtp is None:
                self._smtp = self._connect()
            refused = self._smtp.send_message(message)
        except MESSAGE_REFUSALS as exc:
            self.close()
            raise MailError(f"{self._where}: {type(exc).__name__}: {exc}") from None
        except MailError as exc:
            self._fail(exc.message)
        except ssl.SSLCertVerificationError as exc:
            self._fail(f"{self._where}: its {not_trusted(exc, '[mail] ca_file', self.config.ca_file)}, and check "
                       f"that it names {self.config.host}")
        except (TimeoutError, smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            self._fail(f"{self._where}: {type(exc).__name__}: {exc}")
        if refused:
            raise MailError(f"the SMTP server refused: {', '.join(sorted(refused))}")

    @property
    def _where(self) -> str:
        return f"SMTP {self.config.host}:{self.config.port}"

    def _fail(self, reason: str) -> typing.NoReturn:
        """The server itself failed: the rest of this pass is not tried against it."""
        self.close()
        self._broken = reason
        raise MailError(reason) from None

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self._smtp = None


def new_message(*, sender: str, to: tuple[str, ...], subject: str, text: str, html_body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
    message.set_content(text)
    message.add_alternative(html_body, subtype="html")
    return message


def expiry_phrase(days_left: int) -> str:
    if days_left < 0:
        return "has expired"
    if days_left == 0:
        return "expires today"
    return f"expires in {days_left} day{'s' if days_left != 1 else ''}"


def certificate_name(record: CertificateRecord) -> str:
    """What people call the certificate (its CN, else its first name, else its serial), fit for a
    mail header: a control character (a CR/LF in a CN would make every header refuse it) becomes a
    space."""
    name = record.common_name or (record.sans[0].split(":", 1)[1] if record.sans else record.serial)
    return CONTROL_CHARACTER.sub(" ", name)


def reminder_message(
    record: CertificateRecord, *, days_left: int, recipients: tuple[str, ...], sender: str, base_url: str,
    organization: str, door: str = "",
) -> EmailMessage:
    """`door`: how the certificate came (acme, scep, est, web ...): the steps to renew it differ."""
    name = certificate_name(record)
    phrase = expiry_phrase(days_left)
    expiry = moment_text(record.not_after)
    link = f"{base_url}/certificates/{record.serial}"
    subject = f"Certificate {name} {phrase} ({record.not_after:%Y-%m-%d})"
    sans = ", ".join(s.split(":", 1)[1] for s in record.sans) or "none"
    steps = _renewal_steps(door, base_url, expiry)
    automatic = (
        "Your automatic renewal did not happen: the certificate is past the renewal window this CA suggested "
        "to its ACME client." if door == "acme" else
        f"It was enrolled over {door.upper()}: its device renews it by itself, and the steps below are for when "
        "it does not." if door in ("scep", "est") else "")
    opening = f"The certificate for {name} {phrase}." + (f" {automatic}" if automatic else "")
    text = (
        f"{opening}\n\n"
        f"  Common name:   {record.common_name or '-'}\n"
        f"  Names (SANs):  {sans}\n"
        f"  Serial:        {record.serial}\n"
        f"  Expires:       {expiry}\n"
        f"  Details:       {link}\n\n"
        "To renew it:\n" + "".join(f"  {i}. {s}\n" for i, s in enumerate(steps, 1))
        + f"\nYou receive this because your address is listed for reminders of this certificate at the "
        f"{organization} certificate authority.\n"
    )
    e = html.escape
    html_body = (
        f"<p>The certificate for <strong>{e(name)}</strong> {e(phrase)}.</p>"
        + (f"<p>{e(automatic)}</p>" if automatic else "") +
        "<table>"
        f"<tr><th align=left>Common name</th><td>{e(record.common_name or '-')}</td></tr>"
        f"<tr><th align=left>Names (SANs)</th><td>{e(sans)}</td></tr>"
        f"<tr><th align=left>Serial</th><td><code>{e(record.serial)}</code></td></tr>"
        f"<tr><th align=left>Expires</th><td>{e(expiry)}</td></tr>"
        "</table>"
        f'<p><a href="{e(link)}">Open the certificate</a></p>'
        "<p>To renew it:</p><ol>" + "".join(f"<li>{e(s)}</li>" for s in steps) + "</ol>"
    )
    return new_message(sender=sender, to=recipients, subject=subject, text=text, html_body=html_body)


def _renewal_steps(door: str, base_url: str, expiry: str) -> list[str]:
    renews_itself = {  # the client that renews by itself, where it must reach, how to renew by hand
        "acme": ("Its ACME client (certbot, lego, Caddy ...) should have renewed it by now and did not", "",
                 "with the client (for certbot: `certbot renew --cert-name NAME --force-renewal`)"),
        "scep": ("Its SCEP client (a router's auto-enrollment, certmonger, the MDM's profile) should renew it before it "
                 "expires", f" and reaches {base_url}/scep (a named endpoint: /scep/NAME)",
                 "from the device (certmonger: `getcert resubmit -i ID`; strongSwan: `pki --scep` with `--cert` "
                 "and `--key` of the current certificate)"),
        "est": ("Its EST client should re-enroll it before it expires",
                f" and reaches {base_url}/.well-known/est/ (a label: /.well-known/est/LABEL/)",
                "from the device: `/.well-known/est/simplereenroll` with the current certificate as the TLS "
                "client certificate (for curl: `--cert cert.pem --key key.pem`)"),
    }.get(door)
    if renews_itself:
        client, where, by_hand = renews_itself
        return [f"{client}: check that the client still runs (its timer or cron job){where}, and read its log for "
                "the CA's answer.",
                f"Renew by hand {by_hand}, then make sure the device uses the new certificate."]
    return [
        "Generate a new CSR on the device (for CUCM: OS Administration > Security > Certificate Management "
        "> Generate CSR), for the same names.",
        f"Submit it at {base_url}/certificates/new (or with the API / `ca-server issue`).",
        f"Install the new certificate on the device before {expiry}; the old one is then superseded and "
        "these reminders stop.",
    ]


def mail_admins_once(config: Config, smtp_password: str | None, store, claim: str, subject: str, sentence: str,
                     now) -> list[str]:
    """Mail `sentence` to the admins (users with an address) and [reminders] default_recipients,
    once per `claim` whichever process or node gets there first; released if sending fails, so
    the next run tries again. Returns the addresses mailed (none when another run had it)."""
    recipients = tuple(sorted({u["email"] for u in store.list_users() if u["is_admin"] and u["email"]
                               and not u["disabled_at"]} | set(config.reminders.default_recipients)))
    if not recipients or not store.claim_once(claim, now):
        return []
    message = new_message(sender=config.mail.from_address, to=recipients, subject=subject,
                          text=sentence + "\n", html_body=f"<p>{html.escape(sentence)}</p>")
    try:
        with Mailer(config.mail, smtp_password) as mailer:
            mailer.send(message)
    except MailError:
        store.release_lease(claim, "done")
        raise
    return list(recipients)
