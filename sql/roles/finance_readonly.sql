-- Finance: read the invoice tables, nothing else (no other table, no writes, no DDL).
-- Not a migration: apply once per ClickHouse server/cluster with `usage-etl roles --apply`
-- (or paste the output of `usage-etl roles`), then grant the role to people:
--   CREATE USER alice IDENTIFIED WITH sha256_password BY '...' DEFAULT ROLE finance_readonly;
--   GRANT finance_readonly TO alice;
-- `invoices` is a view over invoice_line_items (SQL SECURITY INVOKER by default), so reading it
-- needs SELECT on the lines too, which this role has.
CREATE ROLE IF NOT EXISTS finance_readonly ${on_cluster};
GRANT ${on_cluster} SELECT ON ${database}.invoice_line_items TO finance_readonly;
GRANT ${on_cluster} SELECT ON ${database}.invoices TO finance_readonly;
GRANT ${on_cluster} SELECT ON ${database}.invoice_periods TO finance_readonly;
