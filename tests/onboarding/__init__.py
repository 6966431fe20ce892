"""init, the account's region and its activity types, against the sandbox."""
