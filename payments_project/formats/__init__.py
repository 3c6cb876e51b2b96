"""Display formats of the staff console (FORMAT_MODULE_PATH): one date style on every page."""
