"""Example plugins (not registered by default): `--plugin examples.<module>` or a config's `plugins:`."""
