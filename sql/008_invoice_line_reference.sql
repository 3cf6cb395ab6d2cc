-- Contract §5 (price book v2): `reference` names the credit grant a `credit` line consumes,
-- '' on every other line. Additive: rows written before this migration read back ''.
ALTER TABLE ${database}.invoice_line_items ${on_cluster}
    ADD COLUMN IF NOT EXISTS reference String DEFAULT '' AFTER meter;
