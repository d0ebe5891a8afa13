"""Independent ground truth for the cross-border decisions (the v2 sort plan contract)."""
