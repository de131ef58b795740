"""streamml for other stream frameworks' apps: a faust transport (scheme ``streamml://``)."""
