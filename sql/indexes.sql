-- An optional extra index for a MemberLux database, and why there is only one.
--
-- mlsidecar needs no extra index: its own reads of a stock MemberLux database were measured with each
-- candidate index alone and without (bench/indexes.py, MariaDB 10.11 with a 128 MB buffer pool, 2 cores,
-- a seeded site of 200 000 users, 999 999 key rows, 973 757 keys_meta rows and 136 956 certificates; the
-- level with the most keys: 133 462 rows of 97 432 users; p50 of 3 rounds):
--
--   workload of the sidecar                 stock      with one candidate index (the three candidates)
--   live sleepers query (whole call)        1.56 s     1.64 s .. 1.90 s
--   read-model rebuild of the level         12.1 s     12.5 s .. 15.2 s
--   certificate first sync                  20.6 s     21.3 s .. 25.8 s
--   level stream (key rows of the level)    4.54 s     4.22 s .. 5.17 s
--   access check, per user                  1.33 ms    1.04 ms .. 1.11 ms
--   trace keys of an order, per user        1.19 ms    0.92 ms .. 1.23 ms
--
-- None changed them beyond the noise: differences of up to 25 % either way appear just as much with
-- an index on a column those statements never read (keys_meta.utm_id: access check 1.33 -> 1.04 ms,
-- rebuild 12.1 -> 14.3 s). The candidates left out, with what they did speed up that the sidecar never
-- asks:
--   (term_id, user_id, date_end) on term_keys: "rows of level T that ended between A and B" 812 -> 229 ms;
--     38 MB.
--   (utm_id) on keys_meta: a look-up by utm_id alone 168 -> 0.56 ms (the bridge looks an order's keys up
--     by user, through the user_id index); 17 MB.
-- Measure them on your own site with bench/indexes.py --index TABLE:NAME:COLUMNS (see its --help).
--
-- The one index below helps the legacy monitoring plugin's sleepers report (its live query) while that
-- plugin still runs beside the sidecar, e.g. while the two reports are compared during a switch-over.
--
-- MemberLux never drops unknown indexes; removing it later is a plain DROP INDEX. It is added online
-- (ALGORITHM=INPLACE, LOCK=NONE): the site keeps writing while it builds, and a server that cannot
-- build online fails the statement instead of locking the table. An existing index and a missing
-- certificates table are skipped, so the script can be re-run.
--
-- Usage: edit the SET lines, then run as an account allowed to ALTER the tables, e.g.
--     mysql -u root -p < sql/indexes.sql
-- CREATE/ALTER statements take no variables for table names, hence PREPARE/EXECUTE; statements end
-- with ';' at the end of a line and no literal contains ';'.

-- ---- Settings: edit these ----------------------------------------------------------------------
SET @db = 'wordpress';                              -- WordPress database name (DB_NAME)
SET @p = 'wp_';                                     -- site table prefix ($table_prefix)

SET @on_site = CONCAT('`', REPLACE(@db, '`', '``'), '`.`', REPLACE(@p, '`', '``'));

-- ---- certificate (user_id, wpmlevel_id) — certificates module only -------------------------------
-- Queries: the legacy plugin's sleepers report anti-joins certificates by (user, level) for every
-- learner of the level; the certificates module indexes only the primary key, so each probe scans.
-- Gain: the legacy V3 page (count + 20 rows) 70.9 s -> 3.09 s (23x); a certificate look-up by
-- (user, level) 28 ms -> 0.29 ms. No change to the sidecar's own reads (table above).
-- Cost: 5 MB for 136 956 certificates; built in 0.1 s.
SET @t = 'memberlux_certificate';
SET @idx = 'mlsidecar_user_level';
SET @sql = IF((SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = @db AND TABLE_NAME = CONCAT(@p, @t)) > 0 AND (SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = @db AND TABLE_NAME = CONCAT(@p, @t) AND INDEX_NAME = @idx) = 0, CONCAT('ALTER TABLE ', @on_site, @t, '` ADD INDEX `', @idx, '` (user_id, wpmlevel_id), ALGORITHM=INPLACE, LOCK=NONE'), 'DO 0');
PREPARE stmt FROM @sql;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;
