-- Regenerates pg_relations.tsv from a PostgreSQL 15 server:
--   psql -Atf src/catalog/pg_relations.sql > body && (header; body) > src/catalog/pg_relations.tsv
select n.nspname || '.' || c.relname || E'\t' || string_agg(a.attname || ':' || t.typname, ' ' order by a.attnum)
from pg_class c join pg_namespace n on n.oid=c.relnamespace
join pg_attribute a on a.attrelid=c.oid and a.attnum>0 and not a.attisdropped
join pg_type t on t.oid=a.atttypid
where n.nspname in ('pg_catalog','information_schema') and c.relkind in ('r','v')
group by n.nspname, c.relname order by 1
