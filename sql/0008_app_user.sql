-- 0008: the uid:gid an app's containers run as ('' = the APP_USER_UID setting when the
-- container is made). Root only where ALLOW_ROOT_CONTAINERS allows it.
ALTER TABLE apps ADD COLUMN user TEXT NOT NULL DEFAULT '';
