"""Built-in provider plugins, registered under ``tidings.providers`` like any third party's."""
