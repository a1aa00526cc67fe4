"""A module with no App at all, for the -A loader."""

VALUE = 1
