-- The replica tables in each tenant's own MySQL/MariaDB database, exactly as the contract
-- gives them (contracts/local_sync.md). IF NOT EXISTS: many tenants already have them, some
-- with the older wpp_chats shape (AUTO_INCREMENT id + original_id), which the sync detects.
-- No CHARACTER SET here: a table takes its database's default (latin1 on older servers),
-- and the sync adapts text to whatever charset the columns have.
CREATE TABLE IF NOT EXISTS wpp_contacts (
  id INT NOT NULL PRIMARY KEY,
  instance VARCHAR(255) NOT NULL,
  name VARCHAR(255) NOT NULL,
  phone VARCHAR(50) NOT NULL,
  customer_id INT NULL,
  is_deleted TINYINT(1) NOT NULL DEFAULT 0,
  UNIQUE KEY unique_instance_phone (instance, phone),
  KEY idx_customer_id (customer_id),
  KEY idx_phone (phone)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS wpp_contact_sectors (
  contact_id INT NOT NULL,
  sector_id INT NOT NULL,
  PRIMARY KEY (contact_id, sector_id),
  KEY idx_sector_id (sector_id)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS wpp_chats (
  id INT NOT NULL PRIMARY KEY,
  instance VARCHAR(255) NOT NULL,
  type VARCHAR(50) NOT NULL,
  avatar_url TEXT NULL,
  user_id INT NULL,
  contact_id INT NULL,
  sector_id INT NULL,
  started_at DATETIME NULL,
  finished_at DATETIME NULL,
  finished_by INT NULL,
  result_id INT NULL,
  is_finished TINYINT(1) NOT NULL DEFAULT 0,
  is_schedule TINYINT(1) NOT NULL DEFAULT 0
) ENGINE=InnoDB;
