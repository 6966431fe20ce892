"""The command line as a person meets it: commands, help and the terminal."""
