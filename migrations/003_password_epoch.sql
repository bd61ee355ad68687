-- Version 3: a refresh token works only under the password it was issued for.
--
-- users.password_epoch counts a local user's password changes; every refresh token
-- records the epoch it was issued in, and a refresh succeeds only while the two are equal.
-- Revoking tokens row by row cannot reach a token that a concurrent login or refresh
-- has inserted but not yet committed; an epoch compared at every use does, so once a
-- password change has answered, no token issued under the old password works, whenever
-- it was written. Existing tokens and users start at 0 together and keep working.
--
-- On Citus both statements are propagated as they are: users is a reference table,
-- refresh_tokens distributed by user_id; a default fills existing rows in place.
ALTER TABLE users ADD COLUMN password_epoch integer NOT NULL DEFAULT 0;
ALTER TABLE refresh_tokens ADD COLUMN password_epoch integer NOT NULL DEFAULT 0;
