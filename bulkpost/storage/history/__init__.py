"""The history: a SQLite database of every row key that runs sharing it have posted, across
runs and input files; its schema, its import from results files, its reports, and where the
account's own history lives.
"""
