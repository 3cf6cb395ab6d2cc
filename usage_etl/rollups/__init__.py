"""The node rollup file format (contract §1): keys, fields and the rules rows must obey."""
