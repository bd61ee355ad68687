-- Version 5: every user has a time zone (contract section 9), an IANA name such as
-- Europe/Berlin, in which a recurring task's occurrences are computed. Existing users,
-- local and Better Auth alike, start in UTC. On Citus the reference table takes the column
-- on every node.
ALTER TABLE users ADD COLUMN timezone text NOT NULL DEFAULT 'UTC'
    CONSTRAINT users_timezone_length CHECK (char_length(timezone) BETWEEN 1 AND 64);
