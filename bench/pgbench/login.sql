-- The ceiling of POST /api/v1/auth/login, without the Argon2id verification that
-- dominates it: the user by email, then the new login's refresh token in a transaction
-- that also forgets the user's expired ones. The token hash and family id, random in the
-- service, are made by the database here.
\set u random(2, 1 + :nusers)
SELECT id, email, name, created_at, issuer, subject, password_hash FROM users
	WHERE email = 'user' || :u || '@bench.example' AND issuer IS NULL;
BEGIN;
DELETE FROM refresh_tokens WHERE user_id = :u AND expires_at < now();
INSERT INTO refresh_tokens (user_id, token_hash, family_id, expires_at)
	VALUES (:u, sha256(random()::text::bytea), gen_random_uuid(), now() + interval '30 days');
COMMIT;
