"""Credentials at rest: Fernet tokens (AES-128-CBC + HMAC-SHA256) under a key kept outside
the database, so the database alone never holds a usable credential.

The key is the one DETRAN's examiner passwords already use (``DETRAN_CREDENTIALS_KEY``): one
key to keep and rotate for every credential the project stores. Several keys separated by
commas rotate: the first encrypts, every one decrypts. Generate one with
``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``.
Plain modules never read the environment: callers pass the key text in.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

CREDENTIALS_KEY_VAR = "DETRAN_CREDENTIALS_KEY"


class CredentialsKeyError(RuntimeError):
    """The encryption key is missing or cannot decrypt what the database holds."""


class CredentialsCipher:
    """Encrypts and decrypts credential text with the key(s) of ``CREDENTIALS_KEY_VAR``."""

    def __init__(self, keys: str, variable: str = CREDENTIALS_KEY_VAR) -> None:
        self.variable = variable
        raw = (keys or "").strip()
        if not raw:
            raise CredentialsKeyError(
                f"{variable} is not set: it holds the key that encrypts stored credentials "
                '(generate one with: python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())")'
            )
        try:
            self._fernet = MultiFernet(
                [Fernet(k.strip().encode()) for k in raw.split(",") if k.strip()]
            )
        except ValueError:
            raise CredentialsKeyError(
                f"{variable} is not a valid Fernet key (32 url-safe base64 bytes)"
            ) from None

    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str, what: str) -> str:
        """``what`` names the credential in the error (never its value)."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise CredentialsKeyError(
                f"{self.variable} cannot decrypt the stored {what} (key changed without "
                "rotation? keep the old key after the new one, comma-separated)"
            ) from None
