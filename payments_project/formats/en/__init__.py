"""English display formats of the staff console (formats.py)."""
