-- A SELECT-only MySQL/MariaDB account for mlsidecar.
--
-- The sidecar already opens every connection with SET SESSION TRANSACTION READ ONLY; this account
-- makes read-only a property of the server as well, and keeps the sidecar away from tables it has
-- no business reading: memberlux_auto_auth (plain-text login secrets) is deliberately NOT granted.
--
-- Usage: edit the SET lines below, then run as an administrative account, e.g.
--     mysql -u root -p < sql/readonly-user.sql
-- Re-running is harmless (CREATE USER IF NOT EXISTS; GRANT is idempotent). Re-run it after
-- installing a MemberLux module or WooCommerce: tables missing now are skipped, not granted.
--
-- GRANT and CREATE USER do not accept variables, so each statement is assembled as a string and
-- run with PREPARE/EXECUTE. Statements end with ';' at the end of a line and no literal contains
-- ';', so the script also runs through simple statement splitters (the test suite uses one).

-- ---- Settings: edit these ----------------------------------------------------------------------
SET @db = 'wordpress';                              -- WordPress database name (DB_NAME)
SET @p = 'wp_';                                     -- site table prefix ($table_prefix, e.g. wp_3_ on a sub-site)
SET @base_p = 'wp_';                                -- network prefix of users/usermeta (= @p on a single site)
SET @ro_user = 'mlsidecar_ro';                      -- account name
SET @ro_host = '%';                                 -- host the sidecar connects from
SET @ro_password = 'CHANGE-ME-this-is-not-a-real-password';

-- ---- Derived values --------------------------------------------------------------------------
SET @account = CONCAT(QUOTE(@ro_user), '@', QUOTE(@ro_host));
SET @on_site = CONCAT('`', REPLACE(@db, '`', '``'), '`.`', REPLACE(@p, '`', '``'));
SET @on_base = CONCAT('`', REPLACE(@db, '`', '``'), '`.`', REPLACE(@base_p, '`', '``'));

-- ---- Account ---------------------------------------------------------------------------------
SET @sql = CONCAT('CREATE USER IF NOT EXISTS ', @account, ' IDENTIFIED BY ', QUOTE(@ro_password));
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

-- ---- Required tables (a failure here usually means a wrong @db, @p or @base_p) -----------------
-- users is granted whole: the admin login compares user_pass hashes (read-only, never logged).
SET @t = 'users';
SET @sql = CONCAT('GRANT SELECT ON ', @on_base, @t, '` TO ', @account);
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'usermeta';
SET @sql = CONCAT('GRANT SELECT ON ', @on_base, @t, '` TO ', @account);
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'options';
SET @sql = CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account);
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'terms';
SET @sql = CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account);
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'term_taxonomy';
SET @sql = CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account);
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'termmeta';
SET @sql = CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account);
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

-- WooCommerce product types (mbl_key) are terms linked to product posts.
SET @t = 'term_relationships';
SET @sql = CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account);
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'posts';
SET @sql = CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account);
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'postmeta';
SET @sql = CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account);
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'memberlux_term_keys';
SET @sql = CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account);
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'memberlux_keys_meta';
SET @sql = CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account);
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

-- ---- Optional module tables: granted only if they exist (GRANT fails on a missing table) -------
-- Certificates module
SET @t = 'memberlux_certificate';
SET @sql = IF((SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = @db AND TABLE_NAME = CONCAT(@p, @t)) > 0, CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account), 'DO 0');
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'memberlux_certificate_templates';
SET @sql = IF((SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = @db AND TABLE_NAME = CONCAT(@p, @t)) > 0, CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account), 'DO 0');
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

-- API & webhooks module
SET @t = 'memberlux_hook';
SET @sql = IF((SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = @db AND TABLE_NAME = CONCAT(@p, @t)) > 0, CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account), 'DO 0');
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'memberlux_hook_action';
SET @sql = IF((SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = @db AND TABLE_NAME = CONCAT(@p, @t)) > 0, CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account), 'DO 0');
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

-- Auto-responder module
SET @t = 'memberlux_mailing';
SET @sql = IF((SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = @db AND TABLE_NAME = CONCAT(@p, @t)) > 0, CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account), 'DO 0');
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'memberlux_mailing_templates';
SET @sql = IF((SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = @db AND TABLE_NAME = CONCAT(@p, @t)) > 0, CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account), 'DO 0');
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'memberlux_mailing_list';
SET @sql = IF((SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = @db AND TABLE_NAME = CONCAT(@p, @t)) > 0, CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account), 'DO 0');
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'memberlux_user_mailing_list';
SET @sql = IF((SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = @db AND TABLE_NAME = CONCAT(@p, @t)) > 0, CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account), 'DO 0');
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'memberlux_mailing_results';
SET @sql = IF((SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = @db AND TABLE_NAME = CONCAT(@p, @t)) > 0, CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account), 'DO 0');
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

-- WooCommerce (order look-ups)
SET @t = 'woocommerce_order_items';
SET @sql = IF((SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = @db AND TABLE_NAME = CONCAT(@p, @t)) > 0, CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account), 'DO 0');
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

SET @t = 'woocommerce_order_itemmeta';
SET @sql = IF((SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = @db AND TABLE_NAME = CONCAT(@p, @t)) > 0, CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account), 'DO 0');
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

-- WooCommerce "High-Performance Order Storage" (WooCommerce >= 8.2; traces of an order call)
SET @t = 'wc_orders';
SET @sql = IF((SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = @db AND TABLE_NAME = CONCAT(@p, @t)) > 0, CONCAT('GRANT SELECT ON ', @on_site, @t, '` TO ', @account), 'DO 0');
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;
