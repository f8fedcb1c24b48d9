"""`samsem review`: inspect and correct a `samsem segment` output folder (queue, corrections, audit log)."""
