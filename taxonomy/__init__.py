"""Taxonomy and traits: names as archives give them -> one accepted species, its lineage and its traits."""
