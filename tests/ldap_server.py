"""A throwaway OpenLDAP server for tests: Debian's slapd with a slapd.conf in a temporary folder,
on a free port, with a test directory of people and groups (groupOfNames and posixGroup). With
`memberof=True` the memberof overlay keeps each person's memberOf, as Active Directory does."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import ldap3

SUFFIX = "dc=example,dc=test"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "directory-admin-secret"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"

CONFIG = """include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile {root}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
suffix "{suffix}"
rootdn "{admin}"
rootpw {password}
directory {root}/db
access to attrs=userPassword by anonymous auth by * none
access to * by * read
"""


def slapd_path() -> str | None:
    return shutil.which("slapd", path="/usr/sbin:/usr/bin:/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LdapServer:
    def __init__(self, tls: tuple[Path, Path] | None = None, memberof: bool = False) -> None:
        """`tls`: (certificate chain, key) PEM files: then also ldaps:// on `tls_port` and StartTLS."""
        self.root = Path(tempfile.mkdtemp(prefix="ca-server-ldap-"))
        (self.root / "db").mkdir()
        config = CONFIG.format(root=self.root, suffix=SUFFIX, admin=ADMIN_DN, password=ADMIN_PASSWORD)
        if memberof:  # after the database: the overlay belongs to it
            config = config.replace("moduleload back_mdb", "moduleload back_mdb\nmoduleload memberof")
            config = config.replace("access to attrs", "overlay memberof\naccess to attrs", 1)
        if tls:
            config = f"TLSCertificateFile {tls[0]}\nTLSCertificateKeyFile {tls[1]}\n" + config
        (self.root / "slapd.conf").write_text(config)
        self.port = _free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.tls_port = _free_port() if tls else None
        urls = self.url + "/" + (f" ldaps://127.0.0.1:{self.tls_port}/" if tls else "")
        self.log = open(self.root / "slapd.log", "wb")
        self.proc = subprocess.Popen([slapd_path(), "-f", str(self.root / "slapd.conf"), "-h", urls, "-d", "0"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"slapd did not start: {(self.root / 'slapd.log').read_text()[-2000:]}") from None
                time.sleep(0.1)
        self.add(SUFFIX, ["dcObject", "organization"], {"o": "Example", "dc": "example"})
        self.add(PEOPLE, ["organizationalUnit"], {"ou": "people"})
        self.add(GROUPS, ["organizationalUnit"], {"ou": "groups"})

    def admin(self) -> ldap3.Connection:
        return ldap3.Connection(ldap3.Server(self.url), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)

    def add(self, dn: str, classes: list[str], attributes: dict) -> None:
        with self.admin() as conn:
            assert conn.add(dn, classes, attributes), conn.result

    def person(self, uid: str, password: str, mail: str | None = None) -> str:
        dn = f"uid={uid},{PEOPLE}"
        self.add(dn, ["inetOrgPerson"], {"uid": uid, "cn": uid, "sn": uid, "userPassword": password,
                                         **({"mail": mail} if mail else {})})
        return dn

    def group(self, cn: str, members: list[str]) -> None:
        self.add(f"cn={cn},{GROUPS}", ["groupOfNames"], {"cn": cn, "member": members})

    def posix_group(self, cn: str, uids: list[str]) -> None:
        self.add(f"cn={cn},{GROUPS}", ["posixGroup"], {"cn": cn, "gidNumber": "5000", "memberUid": uids})

    def remove_member(self, cn: str, dn: str) -> None:
        with self.admin() as conn:
            assert conn.modify(f"cn={cn},{GROUPS}", {"member": [(ldap3.MODIFY_DELETE, [dn])]}), conn.result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
