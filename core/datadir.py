"""What the core keeps in its data dir: where that is, and the names of the files in it."""

from __future__ import annotations

from pathlib import Path

import platformdirs

from servermanager.core.settings import CoreSettings

DB_FILENAME = "servermanager.db"
# Written once, mode 0600, when the core creates its first admin; the log names it, never its content.
INITIAL_PASSWORD_FILE = "initial-admin-password"
# The certificate the core makes on its first start with TLS on (no tls_cert configured), and its
# key: both mode 0600, kept for later starts so the fingerprint agents and the desktop pin stays.
TLS_CERT_FILE = "tls-cert.pem"
TLS_KEY_FILE = "tls-key.pem"


def data_dir(settings: CoreSettings) -> Path:
    return Path(settings.data_dir or platformdirs.user_data_dir("servermanager")).expanduser()


def initial_admin_password(folder: Path) -> str:
    """The generated password of the first admin, from a core's data dir (demo, tests, benchmarks)."""
    return (folder / INITIAL_PASSWORD_FILE).read_text().strip()
