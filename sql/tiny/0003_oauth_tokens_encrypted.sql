-- The OAuth token pair encrypted at rest like DETRAN's credentials (issue 14): Fernet tokens
-- under the project's credentials key (lib/crypto.py). SQL cannot encrypt with that key, so
-- rows stored in clear by earlier versions keep their values here until the Tiny client's
-- first use under the new code moves them into the encrypted columns and clears the plain
-- ones, in one transaction (tiny/client.py, TokenManager). Nothing is dropped.
ALTER TABLE tiny_oauth_tokens ADD COLUMN IF NOT EXISTS access_token_encrypted text;
ALTER TABLE tiny_oauth_tokens ADD COLUMN IF NOT EXISTS refresh_token_encrypted text;
ALTER TABLE tiny_oauth_tokens ALTER COLUMN refresh_token DROP NOT NULL;
ALTER TABLE tiny_oauth_tokens ADD CONSTRAINT tiny_oauth_tokens_refresh_token_kept
    CHECK (refresh_token IS NOT NULL OR refresh_token_encrypted IS NOT NULL);
