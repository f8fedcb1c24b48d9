"""Model bundles written by ``samsem export``: the manifest schema, verification and loading."""
