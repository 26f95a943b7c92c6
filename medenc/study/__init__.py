"""``medenc encrypt-study``: one study (or a batch of studies) into a shareable derived copy."""
