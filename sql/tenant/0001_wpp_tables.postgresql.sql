-- The same replica tables on PostgreSQL, so the sandbox and the tests can run the sync
-- without a MySQL server. Types mirror the MySQL DDL: DATETIME -> timestamp without time
-- zone (a wall-clock time in LOCAL_SYNC_TIMEZONE, like the MySQL column), TINYINT(1) ->
-- smallint (the sync writes 0/1 on both).
CREATE TABLE IF NOT EXISTS wpp_contacts (
  id integer NOT NULL PRIMARY KEY,
  instance varchar(255) NOT NULL,
  name varchar(255) NOT NULL,
  phone varchar(50) NOT NULL,
  customer_id integer NULL,
  is_deleted smallint NOT NULL DEFAULT 0,
  CONSTRAINT unique_instance_phone UNIQUE (instance, phone)
);
CREATE INDEX IF NOT EXISTS idx_customer_id ON wpp_contacts (customer_id);
CREATE INDEX IF NOT EXISTS idx_phone ON wpp_contacts (phone);

CREATE TABLE IF NOT EXISTS wpp_contact_sectors (
  contact_id integer NOT NULL,
  sector_id integer NOT NULL,
  PRIMARY KEY (contact_id, sector_id)
);
CREATE INDEX IF NOT EXISTS idx_sector_id ON wpp_contact_sectors (sector_id);

CREATE TABLE IF NOT EXISTS wpp_chats (
  id integer NOT NULL PRIMARY KEY,
  instance varchar(255) NOT NULL,
  type varchar(50) NOT NULL,
  avatar_url text NULL,
  user_id integer NULL,
  contact_id integer NULL,
  sector_id integer NULL,
  started_at timestamp NULL,
  finished_at timestamp NULL,
  finished_by integer NULL,
  result_id integer NULL,
  is_finished smallint NOT NULL DEFAULT 0,
  is_schedule smallint NOT NULL DEFAULT 0
);
