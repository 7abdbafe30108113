-- Engines that serve every user on the service port (VLESS on Xray) give users no port of their
-- own, so a credential's port becomes optional. SQLite cannot drop NOT NULL in place: the table
-- is rebuilt. UNIQUE (service, port) still holds for the ports that exist (NULLs are distinct).

CREATE TABLE credentials_new (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service TEXT NOT NULL REFERENCES services (name) ON DELETE CASCADE,
    port    INTEGER,                    -- NULL: the user is served on the service's port
    secret  TEXT NOT NULL,
    PRIMARY KEY (user_id, service),
    UNIQUE (service, port)
) STRICT, WITHOUT ROWID;

INSERT INTO credentials_new (user_id, service, port, secret)
    SELECT user_id, service, port, secret FROM credentials;

DROP TRIGGER credentials_free_port;
DROP TABLE credentials;
ALTER TABLE credentials_new RENAME TO credentials;

-- As before: every way a credential with a port disappears returns the port.
CREATE TRIGGER credentials_free_port AFTER DELETE ON credentials
WHEN OLD.port IS NOT NULL AND EXISTS (SELECT 1 FROM services WHERE name = OLD.service)
BEGIN
    INSERT OR IGNORE INTO free_ports (service, port) VALUES (OLD.service, OLD.port);
END;
